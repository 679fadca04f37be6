"""Generated episodes round-trip through lwd_protocol's episode reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lwd_protocol.episode import EpisodeSource, Outcome
from lwd_protocol.episode_io import read_episode
from lwd_sim import STATE_DIM, ScriptedExpert
from lwd_sim.env import EnvConfig, LwdSimEnv
from lwd_sim.generate import GenConfig, _spread_evenly, composition, generate, record_episode
from lwd_sim.tasks import IMPLEMENTED_TASKS, make_task


def test_episode_with_images_round_trips(tmp_path: Path) -> None:
    env = LwdSimEnv("restocking", 0, EnvConfig(image_size=64, max_steps=12))
    path, _info = record_episode(env, ScriptedExpert(env), 3, tmp_path, EpisodeSource.DEMO, "sim-test", images=True)
    ep = read_episode(path)
    assert ep.start.task == "restocking" and ep.start.source is EpisodeSource.DEMO
    assert ep.start.instruction == env.instruction and ep.start.seed == 3
    assert ep.num_steps == 12 and ep.end.outcome is Outcome.TIMEOUT
    assert set(ep.images) == {"head", "left_wrist", "right_wrist"}
    assert ep.images["head"].shape == (12, 64, 64, 3) and ep.images["head"].std() > 5
    assert ep.sim_state.shape == (12, STATE_DIM) and ep.subtask_index.shape == (12,)
    assert np.all(np.isfinite(ep.action)) and ep.action.shape == (12, 16)
    # action at t moves the joints toward it: t+1 observation is closer than t's
    assert np.linalg.norm(ep.joint_position[-1] - ep.action[-2]) < np.linalg.norm(ep.joint_position[0] - ep.action[-2])


def test_generator_mix(tmp_path: Path) -> None:
    stats = generate(GenConfig(out=tmp_path, episodes_per_task=4, tasks=("misplaced_correction",), seed=1))
    files = sorted(tmp_path.glob("*.mcap"))
    assert len(files) == stats.episodes == 4
    episodes = [read_episode(f, load_images=False) for f in files]
    sources = {e.start.source for e in episodes}
    assert sources == {EpisodeSource.DEMO, EpisodeSource.ROLLOUT, EpisodeSource.PLAY}
    for e in episodes:
        assert e.sim_state is not None and e.subtask_index is not None
        assert np.all(np.diff(e.subtask_index) >= 0)
        if e.start.source is EpisodeSource.DEMO:
            assert e.end.outcome is Outcome.SUCCESS and e.end.subtasks_done == e.end.num_subtasks
        if e.start.source is EpisodeSource.PLAY:
            assert e.end.outcome is not Outcome.SUCCESS


def test_composition_follows_table_iv() -> None:
    demo, roll, play, fail_rate = composition("gongfu_tea", 100)
    assert demo + roll + play == 100 and demo > play > roll
    assert 0.2 < fail_rate < 0.3


def test_generator_covers_every_task(tmp_path: Path) -> None:
    stats = generate(GenConfig(out=tmp_path, episodes_per_task=1, seed=3))
    assert set(stats.per_task) == set(IMPLEMENTED_TASKS) and len(IMPLEMENTED_TASKS) == 8
    episodes = [read_episode(f, load_images=False) for f in sorted(tmp_path.glob("*.mcap"))]
    assert len(episodes) == stats.episodes == 8
    assert {e.start.task for e in episodes} == set(IMPLEMENTED_TASKS)
    for e in episodes:
        assert e.sim_state.shape == (e.num_steps, STATE_DIM) and np.all(np.diff(e.subtask_index) >= 0)
        assert e.end.num_subtasks == make_task(e.start.task).num_subtasks
        if e.start.source is EpisodeSource.DEMO:
            assert e.end.outcome is Outcome.SUCCESS and e.end.subtasks_done == e.end.num_subtasks


def test_demos_record_the_command_and_the_disturbance_stays_in_the_plant(tmp_path: Path) -> None:
    """A DART demo's actions are the expert's commands: replayed under the same seeded disturbance
    they reproduce the recorded states; without it they lead elsewhere."""
    disturbed = EnvConfig(disturbance=0.01)
    env = LwdSimEnv("restocking", 0, disturbed)
    path, info = record_episode(env, ScriptedExpert(env), 5, tmp_path, EpisodeSource.DEMO, "sim-test", images=False)
    assert info["success"]
    ep = read_episode(path, load_images=False)

    def replay(config: EnvConfig) -> np.ndarray:
        sim = LwdSimEnv("restocking", 0, config)
        joints = [sim.reset(5)["joint_position"]]
        for action in ep.action[:-1]:
            joints.append(sim.step(action)[0]["joint_position"])
        return np.array(joints)

    np.testing.assert_allclose(replay(disturbed), ep.joint_position, atol=1e-4)
    assert np.abs(replay(EnvConfig()) - ep.joint_position).max() > 5e-3


def test_generator_demos_run_under_the_configured_disturbance(tmp_path: Path) -> None:
    """Same seed, same expert: a disturbed demo's states differ from the undisturbed one's."""
    runs = {}
    for std in (0.0, 0.01):
        out = tmp_path / f"d{std}"
        cfg = GenConfig(
            out=out,
            episodes_per_task=1,
            tasks=("restocking",),
            seed=2,
            demo_disturbance=std,
            disturbed_demo_fraction={"grocery": 1.0},
        )
        assert generate(cfg).per_task["restocking"]["demo_disturbed"] == 1
        (demo,) = [e for e in map(read_episode, sorted(out.glob("*.mcap"))) if e.start.source is EpisodeSource.DEMO]
        runs[std] = demo
    assert runs[0.0].start.seed == runs[0.01].start.seed
    n = min(runs[0.0].num_steps, runs[0.01].num_steps)
    assert np.abs(runs[0.0].joint_position[:n] - runs[0.01].joint_position[:n]).max() > 5e-3


@pytest.mark.parametrize(
    ("fraction", "picked"), [(0.0, "--------"), (0.5, "-x-x-x-x"), (0.25, "---x---x"), (1.0, "xxxxxxxx")]
)
def test_disturbed_demos_are_spread_evenly(fraction: float, picked: str) -> None:
    assert "".join("x" if _spread_evenly(i, fraction) else "-" for i in range(8)) == picked


def _summary(folder: Path) -> list[tuple]:
    episodes = [read_episode(f, load_images=False) for f in folder.glob("*.mcap")]
    return sorted((e.start.task, e.start.seed, e.start.source.value, e.num_steps) for e in episodes)


def test_parallel_generation_writes_the_same_episodes(tmp_path: Path) -> None:
    """Jobs are seeded per (task, shard), so how many processes run them does not change the data."""
    cfg = dict(episodes_per_task=3, tasks=("restocking", "misplaced_correction"), seed=4, shards_per_task=2)
    serial = generate(GenConfig(out=tmp_path / "serial", **cfg), workers=1)
    parallel = generate(GenConfig(out=tmp_path / "parallel", **cfg), workers=2)
    assert serial.per_task == parallel.per_task and serial.episodes == parallel.episodes == 6
    assert _summary(tmp_path / "serial") == _summary(tmp_path / "parallel")


def test_demos_only(tmp_path: Path) -> None:
    stats = generate(GenConfig(out=tmp_path, episodes_per_task=3, tasks=("restocking",), seed=1, demos_only=True))
    assert stats.per_task["restocking"]["demo"] == 3 and stats.episodes == 3
    assert {source for _, _, source, _ in _summary(tmp_path)} == {EpisodeSource.DEMO.value}
