"""Data parallelism: the update sharded over 2 host devices equals the single-device update.

The 2-device run needs ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before JAX starts,
so it runs in a subprocess; the multi-process ``jax.distributed`` run is in
test_parallel_multiprocess.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from lwd_learner import parallel

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from lwd_learner import parallel
from lwd_learner.baselines import BASELINES
from lwd_learner.config import LearnerConfig, NetworkConfig, PolicyConfig

assert jax.device_count() == 2, jax.devices()
net = NetworkConfig(obs_dim=6, horizon=4, action_dim=3, policy_hidden=(32, 32), critic_hidden=(32,),
                    value_hidden=(32,), obs_hidden=(32,), obs_embed_dim=16, time_dim=16, pool_dim=16, pool_heads=2)
config = LearnerConfig(network=net, policy=PolicyConfig(flow_steps=2, qam_loss_steps=1))
B = 16
k = jax.random.split(jax.random.key(0), 8)
batch = {
    "obs": jax.random.normal(k[0], (B, 6)), "actions": jax.random.normal(k[1], (B, 4, 3)),
    "next_obs": jax.random.normal(k[2], (B, 6)),
    "reward": (jax.random.uniform(k[3], (B,)) < 0.3).astype(jnp.float32),
    "discount": jnp.where(jax.random.uniform(k[4], (B,)) < 0.2, 0.0, 0.99),
    "intervention": jax.random.uniform(k[5], (B,)) < 0.25, "return_to_go": jax.random.uniform(k[6], (B,)),
}
host_batch = {name: np.asarray(v) for name, v in batch.items()}
mesh = parallel.make_mesh()
out = {}
for name in ("lwd", "recap"):
    method = BASELINES[name](config)
    state = method.init(jax.random.key(1))
    single_state, single = method.update(state, batch, jax.random.key(2))
    step = parallel.data_parallel(method.update_fn, mesh)
    sharded_batch = parallel.shard_batch(host_batch, mesh)
    shards = sorted(d.id for d in sharded_batch["obs"].sharding.device_set)
    sharded_state, sharded = step(parallel.replicate(state, mesh), sharded_batch, jax.random.key(2))
    leaves = zip(jax.tree_util.tree_leaves(single_state), jax.tree_util.tree_leaves(sharded_state), strict=True)
    out[name] = {
        "shards": shards,
        "obs_shard_rows": [s.data.shape[0] for s in sharded_batch["obs"].addressable_shards],
        "param_max_abs_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in leaves),
        "metrics": {m: [float(single[m]), float(sharded[m])] for m in single},
        "state_replicated": all(x.sharding.is_fully_replicated for x in jax.tree_util.tree_leaves(sharded_state)),
    }
try:
    parallel.shard_batch({"obs": np.zeros((15, 6))}, mesh)
except ValueError as exc:
    out["odd_batch_error"] = str(exc)
print("RESULT " + json.dumps(out))
"""


def test_sharded_update_matches_single_device(tmp_path: Path) -> None:
    script = tmp_path / "sharded.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    for name in ("lwd", "recap"):
        res = out[name]
        assert res["shards"] == [0, 1] and res["obs_shard_rows"] == [8, 8], res
        assert res["state_replicated"]
        assert res["param_max_abs_diff"] < 2e-5, (name, res["param_max_abs_diff"])
        for metric, (single, sharded) in res["metrics"].items():
            assert sharded == pytest.approx(single, rel=1e-5, abs=1e-5), (name, metric, single, sharded)
    assert "'obs' has shape (15, 6)" in out["odd_batch_error"]


def test_distributed_config_from_env_and_validation() -> None:
    assert parallel.DistributedConfig.from_env({}) is None
    cfg = parallel.DistributedConfig.from_env(
        {"LWD_COORDINATOR_ADDRESS": "10.0.0.1:8476", "LWD_NUM_PROCESSES": "4", "LWD_PROCESS_ID": "3"}
    )
    assert cfg == parallel.DistributedConfig("10.0.0.1:8476", 4, 3)
    with pytest.raises(ValueError, match="LWD_PROCESS_ID is not"):
        parallel.DistributedConfig.from_env({"LWD_COORDINATOR_ADDRESS": "h:1", "LWD_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        parallel.DistributedConfig("h:1", 2, 2)
    with pytest.raises(ValueError, match="host:port"):
        parallel.DistributedConfig("h", 2, 0)
    parallel.initialize(None)  # one process: nothing to join
    parallel.initialize(parallel.DistributedConfig("127.0.0.1:1", 1, 0))


def test_single_process_snapshot_agreement_and_batch_checks() -> None:
    assert parallel.agreed_snapshot_version(17) == 17
    assert parallel.host_allgather(np.asarray([4], np.int64)).tolist() == [[4]]
    with pytest.raises(ValueError, match="version must be in"):
        parallel.agreed_snapshot_version(-1)
    mesh = parallel.make_mesh()
    with pytest.raises(ValueError, match="'reward' has shape"):
        parallel.shard_batch({"reward": jnp.float32(1.0)}, mesh)
