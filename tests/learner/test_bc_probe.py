"""The behaviour-cloning probe runs end to end: generator demos -> MCAP -> SFT -> closed-loop scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lwd_learner.bc_probe import UNSEEN_SEED_BASE, ProbeConfig, chunk_fit, main
from lwd_learner.dataset import EpisodeArrays, Normalizer
from lwd_protocol.episode import EpisodeSource, Outcome
from lwd_protocol.robot_spec import ARM_JOINT_DIMS, JOINT_NAMES


def test_probe_writes_train_and_unseen_scene_results(tmp_path: Path) -> None:
    argv = ["--task", "restocking", "--demos", "4", "--updates", "20", "--eval-scenes", "2"]
    argv += ["--execute-steps", "30", "--noise-scales", "0", "1", "--workers", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "restocking.json").read_text())
    assert result["demos"] == result["generated"]["per_task"]["restocking"]["demo"] == 4
    assert result["metric"] == "success" and result["config"]["updates"] == 20
    assert len(result["train_seeds"]) == 2 and len(result["unseen_seeds"]) == 2
    assert all(s >= UNSEEN_SEED_BASE for s in result["unseen_seeds"])
    assert not set(result["train_seeds"]) & set(result["unseen_seeds"])
    assert [(r["execute_steps"], r["noise_scale"]) for r in result["runs"]] == [(30, 0.0), (30, 1.0)]
    for run in result["runs"]:
        for column in ("train", "unseen"):
            assert len(run[column]["subtasks"]) == 2 and 0.0 <= run[column]["value"] <= 1.0
    assert result["git"]["commit"] and result["command"].startswith("python -m lwd_learner.bc_probe")
    table = (tmp_path / "README.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| restocking |"))
    assert row.split(" | ")[3:5] == [f"{r['unseen']['value']:.2f}" for r in result["runs"]]


def test_probe_config_rejects_an_unknown_task() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        ProbeConfig(task="laundry")


def _episode_with_offsets(offsets: list[float], ticks_each: int) -> EpisodeArrays:
    """Joint-positions episode: the recorded arm targets sit ``offsets[k]`` rad above the joints in subtask k."""
    rng = np.random.default_rng(3)
    steps = ticks_each * len(offsets)
    states = np.tile(rng.normal(0.0, 0.2, len(JOINT_NAMES)), (steps, 1))  # the arm holds still
    subtask = np.repeat(np.arange(len(offsets)), ticks_each)
    actions = states.copy()
    actions[:, list(ARM_JOINT_DIMS)] += np.asarray(offsets)[subtask][:, None]
    return EpisodeArrays(
        task="restocking",
        states=states,
        actions=actions,
        action_source=np.zeros(steps, np.uint8),
        outcome=Outcome.SUCCESS,
        source=EpisodeSource.DEMO,
        subtask_index=subtask,
    )


def test_chunk_fit_reports_each_subtasks_arm_error_against_the_recorded_targets() -> None:
    # A policy that outputs zeros predicts "hold the measured joints" (relative dims, mean 0, std 1),
    # so a window's error is the largest offset recorded over its 10 ticks.
    dim = len(JOINT_NAMES)
    normalizer = Normalizer(
        state_mean=np.zeros(dim),
        state_std=np.ones(dim),
        action_mean=np.zeros(dim),
        action_std=np.ones(dim),
        state_source="joint_positions",
        relative_dims=ARM_JOINT_DIMS,
    )
    episode = _episode_with_offsets([0.1, 0.3], ticks_each=40)

    def hold_policy(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.zeros_like(noise)

    fit = chunk_fit(hold_policy, normalizer, [episode], np.random.default_rng(0), samples=400, ticks=10)
    assert fit["ticks"] == 10 and fit["all"]["n"] == 400
    # Subtask 0 is ticks 0-39: windows starting at 31-39 reach into subtask 1 (9 of 40 starts).
    assert fit["by_subtask"]["0"]["median"] == pytest.approx(0.1, abs=1e-6)
    assert fit["by_subtask"]["0"]["p90"] == pytest.approx(0.3, abs=1e-6)
    assert fit["by_subtask"]["1"]["median"] == fit["by_subtask"]["1"]["p90"] == pytest.approx(0.3, abs=1e-6)
    assert set(fit["by_subtask"]) == {"0", "1"}
    assert fit["by_subtask"]["0"]["n"] + fit["by_subtask"]["1"]["n"] == 400
    assert chunk_fit(hold_policy, normalizer, [episode], np.random.default_rng(0), samples=0) == {}
