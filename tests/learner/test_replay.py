"""Replay buffer: gathered batches equal the per-episode transitions, incremental adds, n-step
switching, explicit-RNG sampling and the fixed-ratio offline/online mixing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lwd_learner.dataset import EpisodeArrays, Normalizer, chunk_actions, episode_transitions
from lwd_learner.replay import AGENT_KEYS, MixedSampler, ReplayBuffer, paper_n_step, to_agent_batch
from lwd_protocol.episode import ActionSource, EpisodeSource, Outcome
from lwd_protocol.robot_spec import ARM_JOINT_DIMS

S, A, H, GAMMA = 5, 3, 4, 0.95


def _norm(tasks=("restocking", "gongfu_tea")) -> Normalizer:
    rng = np.random.default_rng(0)
    return Normalizer(rng.normal(size=S), rng.uniform(0.5, 2, S), rng.normal(size=A), rng.uniform(0.5, 2, A), tasks)


def _relative_norm() -> Normalizer:
    """Per-step statistics and arm joints relative to a 16-D joint-position state."""
    rng = np.random.default_rng(1)
    return Normalizer(
        rng.normal(size=16),
        rng.uniform(0.5, 2, 16),
        rng.normal(size=(H, 16)),
        rng.uniform(0.5, 2, (H, 16)),
        ("restocking",),
        "joint_positions",
        ARM_JOINT_DIMS,
    )


def _ep(T, task="restocking", outcome=Outcome.SUCCESS, eid="", seed=0, final=False, human=()):
    rng = np.random.default_rng(seed)
    sources = np.full(T, ActionSource.POLICY)
    sources[list(human)] = ActionSource.HUMAN
    return EpisodeArrays(
        task=task,
        states=rng.normal(size=(T, S)),
        actions=rng.normal(size=(T, A)),
        action_source=sources,
        outcome=outcome,
        source=EpisodeSource.ONLINE,
        final_state=rng.normal(size=S) if final else None,
        episode_id=eid,
    )


def test_gather_equals_episode_transitions() -> None:
    norm = _norm()
    episodes = [
        _ep(13, outcome=Outcome.SUCCESS, seed=1, human=(2, 3)),
        _ep(25, task="gongfu_tea", outcome=Outcome.TIMEOUT, seed=2, final=True),
        _ep(9, outcome=Outcome.FAILURE, seed=3),
    ]
    buf = ReplayBuffer(norm, H, GAMMA, n_step=paper_n_step(long_horizon=3, short_horizon=1))
    added = [buf.add_episode(ep) for ep in episodes]
    assert len(buf) == sum(added) and buf.num_episodes == 3 and buf.num_steps == 13 + 25 + 9
    batch = buf.gather(np.arange(len(buf)))
    row = 0
    for e_idx, ep in enumerate(episodes):
        n = 3 if ep.task == "gongfu_tea" else 1
        tr = episode_transitions(ep, H, GAMMA, n)
        rows = slice(row, row + len(tr))
        states = ep.states if ep.final_state is None else np.vstack([ep.states, ep.final_state])
        np.testing.assert_allclose(batch["obs"][rows], norm.obs(states[tr.start], ep.task), rtol=1e-6)
        np.testing.assert_allclose(batch["next_obs"][rows], norm.obs(states[tr.bootstrap], ep.task), rtol=1e-6)
        chunks, valid = chunk_actions(ep.actions, tr.start, H)
        want = norm.normalize_chunks(chunks, norm.anchors(states[tr.start]))
        np.testing.assert_allclose(batch["actions"][rows], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(batch["action_valid"][rows], valid)
        np.testing.assert_allclose(batch["reward"][rows], tr.reward)
        np.testing.assert_allclose(batch["discount"][rows], tr.discount)
        np.testing.assert_array_equal(batch["intervention"][rows], tr.intervention)
        np.testing.assert_array_equal(batch["episode"][rows], e_idx)
        np.testing.assert_array_equal(batch["task_id"][rows], norm.task_id(ep.task))
        np.testing.assert_array_equal(batch["success"][rows], ep.success)
        np.testing.assert_allclose(batch["return_to_go"][rows], tr.return_to_go)
        row += len(tr)
    assert batch["k"].max() == 3  # the long-horizon episode got 3-chunk windows


def test_incremental_adds_dedupe_and_n_step_switch() -> None:
    buf = ReplayBuffer(_norm(), H, GAMMA, n_step=paper_n_step(long_horizon=4))
    assert buf.add_episode(_ep(40, task="gongfu_tea", eid="ep-1")) == 40
    assert buf.add_episode(_ep(40, task="gongfu_tea", eid="ep-1")) == 0  # a snapshot replayed: no duplicate
    buf.add_episode(_ep(10, eid="ep-2", seed=4))
    assert buf.num_episodes == 2 and len(buf) == 50
    assert buf.column("k").max() == 4
    before = buf.gather(np.arange(len(buf)))
    buf.set_n_step(1)
    after = buf.gather(np.arange(len(buf)))
    assert after["k"].max() == 1 and len(buf) == 50
    np.testing.assert_array_equal(before["obs"], after["obs"])
    assert not np.allclose(before["discount"], after["discount"])
    with pytest.raises(KeyError, match="column"):
        buf.column("nope")


def test_sampling_is_explicitly_seeded() -> None:
    buf = ReplayBuffer(_norm(), H, GAMMA)
    for i in range(4):
        buf.add_episode(_ep(15 + i, seed=i))
    a = buf.sample(np.random.default_rng(7), 32)
    b = buf.sample(np.random.default_rng(7), 32)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = buf.sample(np.random.default_rng(8), 32)
    assert not np.array_equal(a["step"], c["step"])
    assert set(to_agent_batch(a)) == set(AGENT_KEYS)
    assert a["obs"].shape == (32, S + 2) and a["actions"].shape == (32, H, A) and a["obs"].dtype == np.float32
    only = np.flatnonzero(buf.column("episode") == 2)
    picked = buf.sample(np.random.default_rng(0), 16, candidates=only)
    assert (picked["episode"] == 2).all()


def test_task_balanced_sampling_weights_tasks_equally() -> None:
    """Each row: a uniform task, then a uniform transition of it; the grouping follows later adds."""
    norm = _norm(("restocking", "gongfu_tea", "freezer"))
    buf = ReplayBuffer(norm, H, GAMMA)
    buf.add_episode(_ep(12, task="restocking", seed=1))
    buf.add_episode(_ep(300, task="gongfu_tea", seed=2))
    buf.add_episode(_ep(200, task="gongfu_tea", seed=3))
    task_of_row = buf.column("task_id")
    n = 40_000
    counts = np.bincount(buf.sample(np.random.default_rng(0), n)["task_id"], minlength=3)
    np.testing.assert_allclose(counts[:2] / n, [0.5, 0.5], atol=0.01)  # the short task is not starved
    # Within a task every transition is equally likely: expected hits per row = n / (tasks * rows of task).
    rows = buf.sample(np.random.default_rng(1), n)
    hits = np.bincount(rows["episode"] * 1000 + rows["step"], minlength=3000)
    short = np.flatnonzero(task_of_row == 0)
    expected_short = n / 2 / short.size
    short_hits = hits[buf.column("episode")[short] * 1000 + buf.column("step")[short]]
    assert np.all(np.abs(short_hits - expected_short) < 5 * np.sqrt(expected_short))
    # A third task joins: the next batches give it a third.
    buf.add_episode(_ep(20, task="freezer", seed=4))
    counts = np.bincount(buf.sample(np.random.default_rng(2), n)["task_id"], minlength=3)
    np.testing.assert_allclose(counts / n, [1 / 3] * 3, atol=0.01)
    # Uniform over transitions when asked: the 12-step task gets its share of rows, not half.
    flat = ReplayBuffer(norm, H, GAMMA, task_balanced=False)
    flat.add_episodes(buf.episodes)
    counts = np.bincount(flat.sample(np.random.default_rng(3), n)["task_id"], minlength=3)
    np.testing.assert_allclose(counts / n, np.bincount(flat.column("task_id"), minlength=3) / len(flat), atol=0.01)


def test_mixed_sampler_ratio() -> None:
    norm = _norm()
    offline, online = ReplayBuffer(norm, H, GAMMA), ReplayBuffer(norm, H, GAMMA)
    offline.add_episode(_ep(30, seed=1))
    mixed = MixedSampler(offline, online, online_fraction=0.5)
    batch = mixed.sample(np.random.default_rng(0), 10)
    assert not batch["online"].any() and len(batch["reward"]) == 10  # nothing online yet
    online.add_episode(_ep(20, seed=2))
    for size, frac in ((10, 0.5), (9, 0.5), (64, 0.25)):
        mixed.online_fraction = frac
        batch = mixed.sample(np.random.default_rng(1), size)
        assert batch["online"].sum() == round(size * frac) and len(batch["obs"]) == size
    with pytest.raises(ValueError, match="online_fraction"):
        MixedSampler(offline, online, 1.5)


def test_errors_name_the_problem() -> None:
    buf = ReplayBuffer(_norm(), H, GAMMA)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(np.random.default_rng(0), 4)
    bad = EpisodeArrays("restocking", np.zeros((5, S + 1)), np.zeros((5, A)), np.zeros(5), Outcome.SUCCESS, "demo")
    with pytest.raises(ValueError, match="state dim"):
        buf.add_episode(bad)
    with pytest.raises(ValueError, match="n_step"):
        ReplayBuffer(_norm(), H, GAMMA, n_step=0).add_episode(_ep(10))
    with pytest.raises(Exception, match="shoebox"):
        buf.add_episode(_ep(10, task="shoebox"))


def test_reader_thread_can_add_while_sampling() -> None:
    buf = ReplayBuffer(_norm(), H, GAMMA)
    buf.add_episode(_ep(20, seed=0))
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for i in range(1, 40):
                buf.add_episode(_ep(20 + i % 5, seed=i, eid=f"ep-{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=feed)
    thread.start()
    rng = np.random.default_rng(0)
    while thread.is_alive():
        batch = buf.sample(rng, 16)
        assert np.all(np.isfinite(batch["obs"]))
    thread.join()
    assert not errors and buf.num_episodes == 40


def test_relative_actions_are_offsets_from_the_chunk_start_state() -> None:
    """With relative encoding a gathered chunk is (a[t+h] - q[t] on arm joints - mean[h]) / std[h]."""
    norm = _relative_norm()
    rng = np.random.default_rng(7)
    ep = EpisodeArrays(
        "restocking",
        rng.normal(size=(11, 16)),
        rng.normal(size=(11, 16)),
        np.zeros(11),
        Outcome.SUCCESS,
        EpisodeSource.DEMO,
    )
    buf = ReplayBuffer(norm, H, GAMMA)
    buf.add_episode(ep)
    batch = buf.gather(np.arange(len(buf)))
    for row, t in enumerate(batch["step"]):
        for h in range(H):
            target = ep.actions[min(t + h, ep.length - 1)].astype(np.float64).copy()
            target[list(ARM_JOINT_DIMS)] -= ep.states[t, list(ARM_JOINT_DIMS)]
            want = (target - norm.action_mean[h]) / norm.action_std[h]
            np.testing.assert_allclose(batch["actions"][row, h], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="4-step chunks"):
        ReplayBuffer(norm, H + 1, GAMMA)
