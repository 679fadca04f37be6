"""The behaviour-cloning probe runs end to end: generator demos -> MCAP -> SFT -> closed-loop scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lwd_learner.bc_probe import UNSEEN_SEED_BASE, ProbeConfig, main


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
