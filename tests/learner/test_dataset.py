"""Episode -> chunked transitions: n-step returns, terminals, truncation, padding, flags, normalisation.

Expected values are worked out by hand in the comments (H = 3, gamma = 0.9, n = 2, T = 10) and,
for many shapes, against a plain-Python re-implementation of the rules written from the paper.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lwd_learner import divl
from lwd_learner.dataset import (
    ActionEncoding,
    DatasetError,
    EpisodeArrays,
    Normalizer,
    chunk_actions,
    compute_normalizer,
    episode_transitions,
    from_episode,
    load_episodes,
    nstep_returns_np,
)
from lwd_protocol.episode import (
    ActionSource,
    EpisodeEnd,
    EpisodeSource,
    EpisodeStart,
    Outcome,
    episode_filename,
    new_episode_id,
)
from lwd_protocol.episode_io import EpisodeWriter, read_episode
from lwd_protocol.manifest import ActionSpec, Normalization, ObservationSpec, PolicyManifest
from lwd_protocol.policy_io import decode_actions, task_one_hot
from lwd_protocol.robot_spec import ARM_JOINT_DIMS
from lwd_protocol.tasks import TASK_NAMES

H, GAMMA = 3, 0.9
G6 = GAMMA**6  # two chunks of discount


def _episode(T=10, outcome=Outcome.SUCCESS, final=False, sources=None, task="restocking", S=4, A=3, seed=0):
    rng = np.random.default_rng(seed)
    return EpisodeArrays(
        task=task,
        states=rng.normal(size=(T, S)),
        actions=rng.normal(size=(T, A)),
        action_source=np.zeros(T) if sources is None else sources,
        outcome=outcome,
        source=EpisodeSource.ROLLOUT,
        final_state=rng.normal(size=S) if final else None,
    )


def test_success_hand_computed() -> None:
    # Success at step 9 (reward 1 there). Chunk c holds steps c..c+2: chunk 7 -> 0.81, 8 -> 0.9, 9 -> 1,
    # chunks c >= 7 contain the terminal. Window t = (t, t+3).
    tr = episode_transitions(_episode(), H, GAMMA, n_step=2)
    np.testing.assert_array_equal(tr.start, np.arange(10))  # terminal episode: every step starts a transition
    want_reward = [0, 0, 0, 0, 0.729 * 0.81, 0.729 * 0.9, 0.729 * 1.0, 0.81, 0.9, 1.0]
    np.testing.assert_allclose(tr.reward, want_reward, rtol=1e-6)
    np.testing.assert_allclose(tr.discount, [G6] * 4 + [0.0] * 6, rtol=1e-6)
    np.testing.assert_array_equal(tr.k, [2, 2, 2, 2, 2, 2, 2, 1, 1, 1])
    np.testing.assert_array_equal(tr.bootstrap[:4], [6, 7, 8, 9])  # s_{t+2H}
    np.testing.assert_array_equal(tr.terminal, [False] * 4 + [True] * 6)
    np.testing.assert_array_equal(tr.padded, [False] * 8 + [True] * 2)  # chunks 8, 9 run past step 9
    np.testing.assert_allclose(tr.return_to_go, GAMMA ** (9 - np.arange(10)), rtol=1e-6)


def test_failure_is_terminal_without_reward() -> None:
    tr = episode_transitions(_episode(outcome=Outcome.FAILURE), H, GAMMA, n_step=2)
    np.testing.assert_array_equal(tr.reward, np.zeros(10))
    np.testing.assert_allclose(tr.discount, [G6] * 4 + [0.0] * 6, rtol=1e-6)  # no bootstrap past the failure
    np.testing.assert_array_equal(tr.return_to_go, np.zeros(10))


def test_timeout_truncates_and_bootstraps_from_recorded_states() -> None:
    # No terminal; states 0..9 recorded. Chunk c is usable iff s_{c+3} exists: c <= 6.
    tr = episode_transitions(_episode(outcome=Outcome.TIMEOUT), H, GAMMA, n_step=2)
    np.testing.assert_array_equal(tr.start, np.arange(7))
    # t=0..3: both chunks usable -> k=2, bootstrap t+6; t=4..6: chunk t+3 ends past s_9 -> cut, k=1.
    np.testing.assert_array_equal(tr.k, [2, 2, 2, 2, 1, 1, 1])
    np.testing.assert_array_equal(tr.bootstrap, [6, 7, 8, 9, 7, 8, 9])
    np.testing.assert_allclose(tr.discount, [G6] * 4 + [GAMMA**3] * 3, rtol=1e-6)
    np.testing.assert_array_equal(tr.reward, np.zeros(7))
    assert not tr.terminal.any()


def test_final_state_adds_one_chunk_boundary() -> None:
    # With the state after the last action (index 10), chunk 7 ends at a known state.
    tr = episode_transitions(_episode(outcome=Outcome.TIMEOUT, final=True), H, GAMMA, n_step=2)
    np.testing.assert_array_equal(tr.start, np.arange(8))
    np.testing.assert_array_equal(tr.bootstrap, [6, 7, 8, 9, 10, 8, 9, 10])
    np.testing.assert_array_equal(tr.k, [2, 2, 2, 2, 2, 1, 1, 1])


def _reference(ep: EpisodeArrays, horizon: int, gamma: float, n: int, stride: int):
    """The rules of the module docstring, spelled out step by step in plain Python."""
    T = ep.length
    last = T if ep.final_state is not None else T - 1
    r = [0.0] * T
    if ep.outcome is Outcome.SUCCESS:
        r[T - 1] = 1.0
    terminal_ep = ep.outcome in (Outcome.SUCCESS, Outcome.FAILURE)

    def chunk(c):
        if c >= T:
            return None
        rew = sum(gamma**j * r[c + j] for j in range(horizon) if c + j < T)
        term = terminal_ep and c + horizon >= T
        usable = term or c + horizon <= last
        return rew, term, usable

    rows = []
    for t in range(0, T, stride):
        first = chunk(t)
        if not first[2]:
            continue
        total, k, ended = 0.0, 0, False
        for i in range(n):
            info = chunk(t + i * horizon)
            if info is None or not info[2]:
                break
            total += (gamma**horizon) ** i * info[0]
            k += 1
            if info[1]:
                ended = True
                break
        discount = 0.0 if ended else (gamma**horizon) ** k
        rows.append((t, total, discount, k, None if ended else t + k * horizon))
    return rows


@pytest.mark.parametrize(
    ("T", "horizon", "n", "outcome", "final", "stride"),
    [
        (47, 5, 4, Outcome.SUCCESS, False, 1),
        (47, 5, 4, Outcome.TIMEOUT, True, 2),
        (31, 30, 10, Outcome.SUCCESS, False, 1),  # shorter than a chunk, padded
        (95, 30, 10, Outcome.FAILURE, False, 3),
        (95, 30, 10, Outcome.ABORTED, False, 1),
        (64, 7, 1, Outcome.UNKNOWN, True, 1),
        (3, 7, 2, Outcome.TIMEOUT, False, 1),  # no usable chunk at all
    ],
)
def test_matches_reference_implementation(T, horizon, n, outcome, final, stride) -> None:
    ep = _episode(T=T, outcome=outcome, final=final)
    gamma = 0.97
    tr = episode_transitions(ep, horizon, gamma, n, stride)
    ref = _reference(ep, horizon, gamma, n, stride)
    assert len(tr) == len(ref)
    if not ref:
        return
    t, reward, discount, k, boot = map(list, zip(*ref, strict=True))
    np.testing.assert_array_equal(tr.start, t)
    np.testing.assert_allclose(tr.reward, reward, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(tr.discount, discount, rtol=2e-5)
    np.testing.assert_array_equal(tr.k, k)
    for got, want in zip(tr.bootstrap, boot, strict=True):
        if want is not None:
            assert got == want


def test_numpy_nstep_matches_divl() -> None:
    rng = np.random.default_rng(5)
    rewards = rng.uniform(size=(64, 6)).astype(np.float32)
    terminals = rng.uniform(size=(64, 6)) < 0.2
    valid = rng.uniform(size=(64, 6)) < 0.85
    valid[:, 0] = True
    got = nstep_returns_np(rewards, terminals, valid, 0.97)
    want = divl.nstep_returns(rewards, terminals, valid, 0.97)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-6)


def test_chunk_padding_and_flags() -> None:
    sources = np.full(10, ActionSource.POLICY)
    sources[5:7] = ActionSource.HUMAN  # a takeover
    ep = _episode(sources=sources)
    chunks, valid = chunk_actions(ep.actions, np.array([0, 8]), H)
    np.testing.assert_array_equal(chunks[0], ep.actions[0:3])
    np.testing.assert_array_equal(chunks[1], ep.actions[[8, 9, 9]])  # padded with the last action
    np.testing.assert_array_equal(valid, [[True, True, True], [True, True, False]])
    tr = episode_transitions(ep, H, GAMMA, n_step=1)
    want = [(t <= 6 and t + 2 >= 5) for t in range(10)]  # chunks overlapping steps 5..6
    np.testing.assert_array_equal(tr.intervention, want)
    np.testing.assert_array_equal(tr.human, want)
    demo = _episode(sources=np.full(10, ActionSource.HUMAN))  # a demonstration: human, not a takeover
    tr = episode_transitions(demo, H, GAMMA, n_step=1)
    assert tr.human.all() and not tr.intervention.any()


def test_normalizer_statistics_and_contract() -> None:
    rng = np.random.default_rng(1)
    a = _episode(T=20, S=5, seed=2)
    b = EpisodeArrays(
        task="gongfu_tea",
        states=np.c_[rng.normal(3.0, 2.0, (30, 4)), np.full(30, 7.0)],
        actions=rng.normal(size=(30, 3)),
        action_source=np.zeros(30),
        outcome=Outcome.TIMEOUT,
        source=EpisodeSource.ONLINE,
        final_state=np.r_[rng.normal(size=4), 7.0],
    )
    a = EpisodeArrays(**{**a.__dict__, "states": np.c_[a.states[:, :4], np.full(20, 7.0)]})
    norm = compute_normalizer([a, b], encoding=ActionEncoding.absolute())
    states = np.vstack([a.states, b.states, b.final_state[None]]).astype(np.float64)
    np.testing.assert_allclose(norm.state_mean, states.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.state_std[:4], states[:, :4].std(0), rtol=1e-6)
    assert norm.state_std[4] == 1.0  # a constant dimension is not blown up
    actions = np.vstack([a.actions, b.actions])
    np.testing.assert_allclose(norm.action_std, actions.std(0), rtol=1e-5)
    assert norm.tasks == TASK_NAMES and norm.obs_dim == 5 + len(TASK_NAMES)

    obs = norm.obs(b.states, "gongfu_tea")
    np.testing.assert_allclose(obs[:, :5], (b.states - norm.state_mean) / norm.state_std, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(obs[:, 5:], np.repeat(task_one_hot(list(TASK_NAMES), "gongfu_tea"), 30, 0))
    chunks = actions[:12].reshape(4, 3, 3)
    np.testing.assert_allclose(norm.denormalize_chunks(norm.normalize_chunks(chunks, None), None), chunks, atol=1e-5)
    np.testing.assert_allclose(
        norm.normalize_chunks(chunks, None), (chunks - norm.action_mean) / norm.action_std, rtol=1e-5
    )

    exported = norm.to_manifest()
    assert isinstance(exported, Normalization)
    back = Normalizer.from_manifest(exported, norm.observation_spec())
    np.testing.assert_allclose(back.obs(b.states, "gongfu_tea"), obs)
    with pytest.raises(DatasetError, match="shoebox"):
        Normalizer(norm.state_mean, norm.state_std, norm.action_mean, norm.action_std, ("restocking",)).obs(
            b.states, "shoebox"
        )


def _joint_episode(T: int, seed: int, task: str = "restocking") -> EpisodeArrays:
    """An episode whose state is the 16 measured joint positions (the hardware state source)."""
    rng = np.random.default_rng(seed)
    q = np.cumsum(rng.normal(0, 0.05, (T, 16)), axis=0) + rng.normal(0, 1, 16)
    actions = q + rng.normal(0, 0.1, (T, 16))
    actions[:, [7, 15]] = rng.choice([0.0, 0.04], (T, 2))  # grippers: absolute open/closed
    return EpisodeArrays(task, q, actions, np.zeros(T), Outcome.SUCCESS, EpisodeSource.DEMO)


def test_relative_per_step_statistics_match_a_brute_force_count() -> None:
    """Every (chunk step h, joint) statistic equals the one over all explicit a[t+h] - q[t] (t+h < T)."""
    horizon = 5
    episodes = [_joint_episode(T, seed) for T, seed in ((12, 1), (3, 2), (30, 3))]
    norm = compute_normalizer(episodes, state_source="joint_positions", horizon=horizon)
    assert norm.relative_dims == ARM_JOINT_DIMS and norm.horizon == horizon
    for h in range(horizon):
        values = []
        for ep in episodes:
            for t in range(ep.length - h):
                v = ep.actions[t + h].astype(np.float64).copy()
                for d in ARM_JOINT_DIMS:
                    v[d] -= ep.states[t, d]
                values.append(v)
        values = np.array(values)
        np.testing.assert_allclose(norm.action_mean[h], values.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(norm.action_std[h], np.maximum(values.std(0), 1e-2), rtol=1e-5)
    short = compute_normalizer(episodes[:2], state_source="joint_positions", horizon=15)  # longest is 12 steps
    np.testing.assert_allclose(short.action_mean[12:], np.repeat(short.action_mean[11:12], 3, axis=0))


def test_relative_chunks_round_trip_and_decode_like_the_robot() -> None:
    """Learner encoding -> manifest -> ``policy_io.decode_actions`` (the robot's path) gives the same targets."""
    horizon = 4
    episodes = [_joint_episode(20, seed) for seed in (4, 5)]
    norm = compute_normalizer(episodes, state_source="joint_positions", horizon=horizon)
    ep = episodes[0]
    starts = np.array([0, 6, 15])
    chunks, _ = chunk_actions(ep.actions, starts, horizon)
    anchors = norm.anchors(ep.states[starts])
    encoded = norm.normalize_chunks(chunks, anchors)
    # arm dims are offsets from the start state's joints, grippers absolute
    want = chunks.astype(np.float64).copy()
    want[:, :, list(ARM_JOINT_DIMS)] -= ep.states[starts][:, None, list(ARM_JOINT_DIMS)]
    np.testing.assert_allclose(encoded, (want - norm.action_mean) / norm.action_std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.denormalize_chunks(encoded, anchors), chunks, atol=1e-5)

    action = norm.action_spec()
    assert action.horizon == horizon and action.relative_state_index == list(ARM_JOINT_DIMS)
    manifest = PolicyManifest(
        version=1,
        parent_version=0,
        created_at="2026-01-01T00:00:00Z",
        training_snapshot=1,
        model_file="m.onnx",
        files={},
        inputs=[],
        outputs=[],
        observation=norm.observation_spec(),
        action=action,
        normalization=norm.to_manifest(),
    )
    for row, start in enumerate(starts):
        got = decode_actions(manifest, encoded[row], ep.states[start])
        np.testing.assert_allclose(got, chunks[row], atol=1e-5)
    back = Normalizer.from_manifest(manifest.normalization, manifest.observation, manifest.action)
    np.testing.assert_allclose(back.action_mean, norm.action_mean)
    assert back.relative_dims == norm.relative_dims
    with pytest.raises(DatasetError, match="relative_state_index"):
        bad = ActionSpec(horizon=horizon, relative_dims=[0], relative_state_index=[3])
        Normalizer.from_manifest(manifest.normalization, ObservationSpec(state_dim=16), bad)


def test_bad_input_is_named() -> None:
    with pytest.raises(DatasetError, match="must match"):
        EpisodeArrays("restocking", np.zeros((5, 2)), np.zeros((4, 2)), np.zeros(4), Outcome.SUCCESS, "demo")
    with pytest.raises(DatasetError, match="NaN"):
        EpisodeArrays("restocking", np.full((2, 2), np.nan), np.zeros((2, 2)), np.zeros(2), Outcome.SUCCESS, "demo")
    with pytest.raises(KeyError, match="unknown task"):
        EpisodeArrays("laundry", np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(2), Outcome.SUCCESS, "demo")
    with pytest.raises(DatasetError, match="zero episodes"):
        compute_normalizer([])
    with pytest.raises(ValueError, match="n_step"):
        episode_transitions(_episode(), H, GAMMA, n_step=0)


def _write_mcap(tmp_path, outcome=Outcome.SUCCESS, steps=9):
    eid = new_episode_id("robot_01")
    start = EpisodeStart(eid, "robot_01", "restocking", "restock the shelf", EpisodeSource.ONLINE, policy_version=4)
    writer = EpisodeWriter(tmp_path / episode_filename(eid), start)
    rng = np.random.default_rng(3)
    states, actions = rng.normal(size=(steps, 6)).astype(np.float32), rng.normal(size=(steps, 16)).astype(np.float32)
    sources = [ActionSource.HUMAN if 3 <= t < 5 else ActionSource.POLICY for t in range(steps)]
    for t in range(steps):
        ns = 10**9 + t * 33_333_333
        writer.write_joint_state(np.full(16, t, np.float32), t, ns)
        writer.write_action(actions[t], t, ns, source=sources[t], policy_version=4)
        writer.write_sim_state(states[t], t, ns, subtask_index=t // 5, num_subtasks=2, success=False, failed=False)
    path = writer.close(EpisodeEnd(outcome=outcome, num_steps=steps, subtasks_done=2, num_subtasks=2))
    return path, states, actions, sources


def test_from_mcap_episode(tmp_path) -> None:
    path, states, actions, sources = _write_mcap(tmp_path)
    (ep,) = load_episodes([path])
    np.testing.assert_array_equal(ep.states, states)
    np.testing.assert_array_equal(ep.actions, actions)
    np.testing.assert_array_equal(ep.action_source, sources)
    assert ep.task == "restocking" and ep.success and ep.terminal and ep.score == 1.0
    assert ep.source is EpisodeSource.ONLINE and ep.policy_version == 4 and ep.num_intervention_steps == 2
    np.testing.assert_array_equal(ep.subtask_index, np.arange(9) // 5)
    joints = from_episode(read_episode(path, load_images=False), state_source="joint_positions")
    assert joints.states.shape == (9, 16)
    tr = episode_transitions(ep, 3, GAMMA, 1)
    assert tr.intervention[[1, 2, 3, 4]].all() and not tr.intervention[[0, 5, 6]].any()

    episode = read_episode(path, load_images=False)
    ep = from_episode(dataclasses.replace(episode, end=None))  # as read_episode(allow_partial=True) returns it
    assert ep.outcome is Outcome.UNKNOWN and not ep.terminal  # a crash is a truncation, not a failure
