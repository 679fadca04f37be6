"""Sim fleet rollouts: chunked execution, expert takeovers recorded as HUMAN, EpisodeArrays that the
replay accepts, and the Table I scoring of evaluation."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from lwd_learner.dataset import EpisodeArrays, Normalizer, episode_transitions
from lwd_learner.evaluate import EvalConfig, evaluate, summarize
from lwd_learner.replay import ReplayBuffer
from lwd_learner.rollout import EpisodeSpec, RolloutConfig, RolloutResult, SimFleet, TakeoverConfig
from lwd_protocol.episode import ActionSource, EpisodeSource, Outcome
from lwd_protocol.tasks import TASK_NAMES

H = 30


@pytest.fixture(scope="module")
def fleet():
    from lwd_sim import STATE_DIM
    from lwd_sim.robot import home_action

    fleet = SimFleet(["restocking"], envs_per_task=2, max_steps=240)
    # Normalised action 0 = the home posture, so a policy returning zeros just holds still.
    fleet.norm = Normalizer(np.zeros(STATE_DIM), np.ones(STATE_DIM), home_action(), np.ones(16))
    yield fleet
    fleet.close()


def _hold(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.zeros_like(noise)


def test_policy_only_rollout_is_chunked_and_recorded(fleet) -> None:
    calls = []

    def policy(obs, noise):
        calls.append(obs.shape)
        return _hold(obs, noise)

    specs = [EpisodeSpec("restocking", 3), EpisodeSpec("restocking", 4), EpisodeSpec("restocking", 5)]
    results, stats = fleet.run(policy, fleet.norm, specs, np.random.default_rng(0))
    assert [r.spec for r in results] == specs  # results come back in spec order
    for r in results:
        ep = r.episode
        assert r.length == ep.length == 240 and not r.success and r.score == 0.0  # holding still does nothing
        assert ep.outcome is Outcome.TIMEOUT and ep.source is EpisodeSource.ONLINE and ep.final_state is not None
        assert (ep.action_source == ActionSource.POLICY).all() and r.num_takeovers == 0
        assert ep.states.shape == (240, fleet.norm.state_dim) and ep.subtask_index.shape == (240,)
    # one query per 30-step chunk; 2 envs share each batched call, padded to the fleet size
    assert stats.policy_calls == 240 // H * 2 and all(shape == (2, fleet.norm.obs_dim) for shape in calls)
    assert stats.env_steps == 3 * 240


def test_a_scene_run_twice_gives_two_episodes_the_replay_keeps(fleet) -> None:
    spec = EpisodeSpec("restocking", 7)
    results, _ = fleet.run(_hold, fleet.norm, [spec, spec], np.random.default_rng(0))
    first, second = (r.episode for r in results)
    np.testing.assert_array_equal(first.states, second.states)  # same scene, same policy: same episode...
    assert first.episode_id != second.episode_id  # ...but two executions, both kept
    buffer = ReplayBuffer(fleet.norm, H, 0.99)
    buffer.add_episodes([first, second])
    assert buffer.num_episodes == 2


def test_expert_takeover_is_recorded_as_intervention(fleet) -> None:
    takeover = TakeoverConfig(stall_steps=40, max_takeover_steps=200, max_takeovers=3)
    results, _ = fleet.run(
        _hold, fleet.norm, [EpisodeSpec("restocking", 11)], np.random.default_rng(1), RolloutConfig(takeover=takeover)
    )
    (r,) = results
    ep = r.episode
    human = ep.action_source == ActionSource.HUMAN
    assert r.num_takeovers >= 1 and r.intervention_steps == human.sum() > 0
    assert not human[:40].any() and human[40]  # the policy had its 40 stall steps first
    assert ep.subtasks_done >= 1 and r.score > 0  # the expert made progress the policy could not
    assert (ep.action_source == ActionSource.POLICY)[41:].any()  # control was handed back
    tr = episode_transitions(ep, H, 0.9999, 1)
    assert tr.intervention.any() and not tr.intervention.all()
    buf = ReplayBuffer(fleet.norm, H, 0.9999)
    assert buf.add_episode(ep) == len(tr)


def test_noise_comes_from_the_given_rng(fleet) -> None:
    def noisy(obs, noise):
        return 0.05 * noise

    spec = [EpisodeSpec("restocking", 2)]
    a, _ = fleet.run(noisy, fleet.norm, spec, np.random.default_rng(5))
    b, _ = fleet.run(noisy, fleet.norm, spec, np.random.default_rng(5))
    c, _ = fleet.run(noisy, fleet.norm, spec, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0].episode.actions, b[0].episode.actions)
    assert not np.array_equal(a[0].episode.actions, c[0].episode.actions)


def test_noise_scale_scales_the_flow_start(fleet) -> None:
    seen: list[np.ndarray] = []

    def record(obs, noise):
        seen.append(noise.copy())
        return np.zeros_like(noise)

    spec = [EpisodeSpec("restocking", 2)]
    fleet.run(record, fleet.norm, spec, np.random.default_rng(5), RolloutConfig(noise_scale=0.0))
    assert seen and all(not n.any() for n in seen)
    seen.clear()
    fleet.run(record, fleet.norm, spec, np.random.default_rng(5), RolloutConfig(noise_scale=0.5))
    half = np.concatenate([n.ravel() for n in seen])
    seen.clear()
    fleet.run(record, fleet.norm, spec, np.random.default_rng(5), RolloutConfig())
    np.testing.assert_allclose(half, 0.5 * np.concatenate([n.ravel() for n in seen]), rtol=1e-6)


def test_evaluation_sampler_settings_reach_the_rollout(fleet) -> None:
    calls = []

    def count(obs, noise):
        calls.append(float(np.abs(noise).max()))
        return np.zeros_like(noise)

    evaluate(fleet, count, fleet.norm, EvalConfig(episodes_per_task=1, execute_steps=10, noise_scale=0.0))
    replanned = len(calls)
    assert max(calls) == 0.0
    calls.clear()
    evaluate(fleet, count, fleet.norm, EvalConfig(episodes_per_task=1))
    assert max(calls) > 0 and replanned >= 2 * len(calls)  # 240 ticks: a query every 10 vs every 30 ticks


def test_bad_policy_and_specs_fail_clearly(fleet) -> None:
    with pytest.raises(ValueError, match="policy returned shape"):
        fleet.run(lambda o, n: n[:, :5], fleet.norm, [EpisodeSpec("restocking", 0)], np.random.default_rng(0))
    with pytest.raises(ValueError, match="no env"):
        fleet.run(_hold, fleet.norm, [EpisodeSpec("gongfu_tea", 0)], np.random.default_rng(0))


def test_evaluate_runs_fixed_episodes(fleet) -> None:
    result = evaluate(fleet, _hold, fleet.norm, EvalConfig(episodes_per_task=2, keep_episodes=True))
    task = result.per_task["restocking"]
    assert task.metric == "success" and task.episodes == 2 and task.value == 0.0 and np.isnan(task.cycle_time_s)
    assert len(result.episodes) == 2 and result.average == 0.0


def _fake(task: str, success: bool, score: float, length: int) -> RolloutResult:
    ep = EpisodeArrays(task, np.zeros((length, 2)), np.zeros((length, 2)), np.zeros(length), Outcome.TIMEOUT, "online")
    return RolloutResult(EpisodeSpec(task, 0), ep, success, not success, score, length, 0, 0)


def test_table1_scoring() -> None:
    results = [
        _fake("restocking", True, 1.0, 60),
        _fake("restocking", False, 0.5, 90),  # partial progress does not count on a grocery task
        _fake("gongfu_tea", True, 1.0, 300),
        _fake("gongfu_tea", False, 3 / 7, 900),
        _fake("gongfu_tea", False, 1 / 7, 900),
    ]
    per_task = summarize(results, ["restocking", "gongfu_tea"])
    assert per_task["restocking"].metric == "success" and per_task["restocking"].value == 0.5
    assert per_task["gongfu_tea"].metric == "score"
    assert per_task["gongfu_tea"].value == pytest.approx((1 + 3 / 7 + 1 / 7) / 3)
    assert per_task["gongfu_tea"].success_rate == pytest.approx(1 / 3)
    assert per_task["restocking"].cycle_time_s == pytest.approx(2.0)  # 60 steps at 30 Hz, successes only
    assert per_task["gongfu_tea"].mean_length_s == pytest.approx(700 / 30)
    assert set(per_task) <= set(TASK_NAMES)
