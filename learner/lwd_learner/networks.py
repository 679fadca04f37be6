"""Flax (linen) networks of the CPU learner: velocity field, critic with two Q heads, value head.

The paper's networks (Sec. IV-D) are a pi0.5 action expert and a Gemma3-SigLIP value/critic
backbone. On a 2-core CPU learner we keep the same structure with small MLP trunks over a
low-dimensional observation (the simulator's privileged state, or a precomputed embedding):

- :class:`VelocityField` ``f(s, a^w, w)``: obs embedding + sinusoidal time embedding + the
  flattened ``(H, A)`` chunk through an MLP; output ``(B, H, A)``. Optionally (``conditioning=
  "film"``) the MLP's hidden layers are also modulated by the obs and time embeddings
  (:class:`FiLMMLP`).
- :class:`Critic`: obs embedding ``z`` concatenated with a learned temporal attention pooling of
  the chunk, fed to TWO scalar Q heads (clipped double-Q; the min is used for targets).
- :class:`ValueNet`: obs embedding to ``K = 201`` categorical logits (DIVL) or one scalar
  (expectile baseline).
- :class:`IndicatorConditionedVelocityField`: the velocity field plus an advantage-indicator
  input for the RECAP baseline, wrapping an unchanged :class:`VelocityField`.

Attention is written as Dense + einsum (no ``MultiHeadDotProductAttention``) so the modules stay
easy to export and inspect.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def param_count(params: object) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def sinusoidal_embedding(w: jax.Array, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> jax.Array:
    """Sine/cosine features of the flow time ``w (B,)`` with geometric periods (as in openpi); ``(B, dim)``."""
    half = dim // 2
    fraction = jnp.linspace(0.0, 1.0, half, dtype=jnp.float32)
    period = min_period * (max_period / min_period) ** fraction
    angles = 2.0 * jnp.pi * w[:, None] / period[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class MLP(nn.Module):
    """Dense-GELU stack with optional LayerNorm after each hidden layer; last layer is linear."""

    hidden_dims: Sequence[int]
    out_dim: int
    layer_norm: bool = True
    zero_init_output: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden_dims:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.gelu(x)
        init = nn.initializers.zeros_init() if self.zero_init_output else nn.initializers.lecun_normal()
        return nn.Dense(self.out_dim, kernel_init=init)(x)


class FiLMMLP(nn.Module):
    """:class:`MLP` whose hidden layers are modulated by a condition: ``LN(h) * (1 + scale) + shift``.

    ``scale, shift = Dense(cond)`` per layer, initialised at zero, so the network starts as the
    plain MLP and learns multiplicative state-dependent gating on top of it (DiT's adaLN-Zero, the
    FiLM of conditioned policies). A concatenated input can only add the condition to each
    pre-activation; the gating lets the observation switch which features of the chunk matter.
    """

    hidden_dims: Sequence[int]
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        # the Dense / LayerNorm names are MLP's, so an MLP's parameters drop into the unmodulated part
        for i, width in enumerate(self.hidden_dims):
            x = nn.LayerNorm(name=f"LayerNorm_{i}")(nn.Dense(width, name=f"Dense_{i}")(x))
            modulation = nn.Dense(2 * width, kernel_init=nn.initializers.zeros_init(), name=f"Modulation_{i}")
            scale, shift = jnp.split(modulation(cond), 2, axis=-1)
            x = nn.gelu(x * (1.0 + scale) + shift)
        return nn.Dense(self.out_dim, name=f"Dense_{len(self.hidden_dims)}")(x)


class ObsEncoder(nn.Module):
    """Low-dimensional observation (state vector or precomputed embedding) to an embedding ``z``."""

    hidden_dims: Sequence[int] = (256,)
    embed_dim: int = 256

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        z = MLP(self.hidden_dims, self.embed_dim)(obs)
        return nn.LayerNorm()(z)


class VelocityField(nn.Module):
    """Flow velocity ``f(s, a^w, w)`` over flattened action chunks (QAM / openpi-style MLP head).

    Call with ``obs (B, obs_dim)``, ``actions (B, H, A)``, ``w (B,)``; returns ``(B, H, A)``.
    ``embed`` and ``velocity`` split the call so a sampler or QAM step can encode the
    observation once and reuse ``z`` at every Euler step: ``f = velocity(embed(obs), a, w)``.
    """

    horizon: int
    action_dim: int
    hidden_dims: Sequence[int] = (256, 256, 256)
    obs_hidden_dims: Sequence[int] = (256,)
    obs_embed_dim: int = 256
    time_dim: int = 64
    conditioning: str = "concat"  # or "film": see NetworkConfig.policy_conditioning

    def setup(self) -> None:
        if self.conditioning not in ("concat", "film"):
            raise ValueError(f"VelocityField: conditioning must be 'concat' or 'film', got {self.conditioning!r}")
        self.encoder = ObsEncoder(self.obs_hidden_dims, self.obs_embed_dim)
        self.time_proj = nn.Dense(self.time_dim)
        out_dim = self.horizon * self.action_dim
        self.trunk = (
            MLP(self.hidden_dims, out_dim) if self.conditioning == "concat" else FiLMMLP(self.hidden_dims, out_dim)
        )
        # Linear path from the noisy chunk to the velocity: a trunk narrower than H*A (256 < 480)
        # cannot carry x_w through its bottleneck, and flow-matching BC then never fits the chunks
        # (measured: sample MSE 0.65 of the action variance without it, 0.05 with it).
        self.chunk_skip = nn.Dense(self.horizon * self.action_dim)

    def embed(self, obs: jax.Array) -> jax.Array:
        """Observation embedding ``z (B, obs_embed_dim)``."""
        return self.encoder(obs)

    def velocity(self, z: jax.Array, actions: jax.Array, w: jax.Array) -> jax.Array:
        """Velocity from a precomputed embedding ``z``; same output as ``__call__``."""
        t = nn.gelu(self.time_proj(sinusoidal_embedding(w, self.time_dim)))
        flat = actions.reshape(actions.shape[0], self.horizon * self.action_dim)
        x = jnp.concatenate([z, t, flat], axis=-1)
        hidden = self.trunk(x) if self.conditioning == "concat" else self.trunk(x, jnp.concatenate([z, t], axis=-1))
        out = hidden + self.chunk_skip(flat)
        return out.reshape(actions.shape)

    def __call__(self, obs: jax.Array, actions: jax.Array, w: jax.Array) -> jax.Array:
        return self.velocity(self.embed(obs), actions, w)


# Advantage-indicator classes of :class:`IndicatorConditionedVelocityField` (RECAP baseline).
INDICATOR_NULL = 0  # "no indicator": the unconditional branch (label dropout, CFG)
INDICATOR_NEGATIVE = 1
INDICATOR_POSITIVE = 2
NUM_INDICATORS = 3


class IndicatorConditionedVelocityField(nn.Module):
    """:class:`VelocityField` plus a learned advantage-indicator embedding (RECAP-style policy).

    The LWD velocity field is the submodule ``base``, unchanged: its parameters sit under
    ``params["base"]`` with exactly the :class:`VelocityField` tree, so the reference policy's
    parameters drop in as they are (:meth:`from_base_params`) and the LWD policy keeps its own
    parameters and call signature. The indicator (``INDICATOR_NULL / NEGATIVE / POSITIVE``,
    int ``(B,)``) is embedded and ADDED to the observation embedding ``z``; the embedding table
    starts at zero, so a freshly built conditioned policy equals the reference for every label.
    """

    horizon: int
    action_dim: int
    hidden_dims: Sequence[int] = (256, 256, 256)
    obs_hidden_dims: Sequence[int] = (256,)
    obs_embed_dim: int = 256
    time_dim: int = 64
    conditioning: str = "concat"

    def setup(self) -> None:
        self.base = VelocityField(
            horizon=self.horizon,
            action_dim=self.action_dim,
            hidden_dims=self.hidden_dims,
            obs_hidden_dims=self.obs_hidden_dims,
            obs_embed_dim=self.obs_embed_dim,
            time_dim=self.time_dim,
            conditioning=self.conditioning,
        )
        self.indicator_embedding = nn.Embed(
            NUM_INDICATORS, self.obs_embed_dim, embedding_init=nn.initializers.zeros_init()
        )

    def embed(self, obs: jax.Array, indicator: jax.Array) -> jax.Array:
        """Conditioned embedding ``z + e(indicator)``, ``(B, obs_embed_dim)``."""
        return self.base.embed(obs) + self.indicator_embedding(indicator)

    def velocity(self, z: jax.Array, actions: jax.Array, w: jax.Array) -> jax.Array:
        """Velocity from a conditioned embedding (the base field's trunk)."""
        return self.base.velocity(z, actions, w)

    def __call__(self, obs: jax.Array, actions: jax.Array, w: jax.Array, indicator: jax.Array) -> jax.Array:
        return self.velocity(self.embed(obs, indicator), actions, w)

    @staticmethod
    def from_base_params(base_params: dict, conditioned_params: dict) -> dict:
        """``conditioned_params`` with its ``base`` subtree replaced by a :class:`VelocityField` tree."""
        inner = dict(conditioned_params["params"])
        inner["base"] = base_params["params"]
        return {**conditioned_params, "params": inner}


class TemporalAttentionPool(nn.Module):
    """Learned-query multi-head attention pooling over the ``H`` steps of a chunk: ``(B, H, A) -> (B, D)``.

    Each step gets a Dense embedding plus a learned positional embedding; learned per-head
    queries attend over time, so the critic can weight the chunk's steps unequally. The values keep
    each step's magnitude (no normalisation of the tokens).
    """

    dim: int = 64
    num_heads: int = 4

    @nn.compact
    def __call__(self, actions: jax.Array) -> jax.Array:
        _, horizon, _ = actions.shape
        head_dim = self.dim // self.num_heads
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (horizon, self.dim))
        # No LayerNorm on the tokens: normalising Dense(a_t) + pos makes each step's embedding invariant
        # to the step's scale, so Q(2a) = Q(a) and the critic cannot tell how far a chunk moves (measured
        # session 10: |Q(2a) - Q(a)| ~1e-3 at init). The chunks are already normalised per step.
        tokens = nn.Dense(self.dim)(actions) + pos[None]
        query = self.param("query", nn.initializers.normal(0.02), (self.num_heads, head_dim))
        keys = nn.Dense(self.dim)(tokens).reshape(*tokens.shape[:2], self.num_heads, head_dim)
        values = nn.Dense(self.dim)(tokens).reshape(*tokens.shape[:2], self.num_heads, head_dim)
        scores = jnp.einsum("bhnd,nd->bnh", keys, query) / jnp.sqrt(head_dim)
        weights = jax.nn.softmax(scores, axis=-1)  # over time
        pooled = jnp.einsum("bnh,bhnd->bnd", weights, values).reshape(actions.shape[0], self.dim)
        return nn.Dense(self.dim)(pooled)


class Critic(nn.Module):
    """Clipped double-Q critic ``Q(s, a)``: returns ``(2, B)``, one row per head."""

    hidden_dims: Sequence[int] = (256, 256)
    obs_hidden_dims: Sequence[int] = (256,)
    obs_embed_dim: int = 256
    pool_dim: int = 64
    pool_heads: int = 4

    @nn.compact
    def __call__(self, obs: jax.Array, actions: jax.Array) -> jax.Array:
        z = ObsEncoder(self.obs_hidden_dims, self.obs_embed_dim)(obs)
        pooled = TemporalAttentionPool(self.pool_dim, self.pool_heads)(actions)
        x = jnp.concatenate([z, pooled], axis=-1)
        heads = [MLP(self.hidden_dims, 1, name=f"q_head_{i}")(x)[:, 0] for i in range(2)]
        return jnp.stack(heads, axis=0)


class ValueNet(nn.Module):
    """State value model: ``K`` categorical logits for DIVL, or ``num_outputs=1`` scalar for expectile V.

    Returns ``(B, num_outputs)``.
    """

    num_outputs: int = 201
    hidden_dims: Sequence[int] = (256,)
    obs_hidden_dims: Sequence[int] = (256,)
    obs_embed_dim: int = 256

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        z = ObsEncoder(self.obs_hidden_dims, self.obs_embed_dim)(obs)
        return MLP(self.hidden_dims, self.num_outputs)(z)
