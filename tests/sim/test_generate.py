"""Generated episodes round-trip through lwd_protocol's episode reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lwd_protocol.episode import EpisodeSource, Outcome
from lwd_protocol.episode_io import read_episode
from lwd_sim import STATE_DIM, ScriptedExpert
from lwd_sim.env import EnvConfig, LwdSimEnv
from lwd_sim.generate import GenConfig, composition, generate, record_episode
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
