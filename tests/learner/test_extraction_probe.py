"""The extraction probe runs end to end: generator data -> SFT reference -> its rollouts -> QAM per lambda."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lwd_learner.extraction_probe import ExtractionProbeConfig, main


def test_probe_reports_reference_rollouts_critic_and_each_lambda(tmp_path: Path) -> None:
    data = tmp_path / "data"
    argv = ["--task", "restocking", "--profile", "quick", "--episodes-per-task", "6", "--data-dir", str(data)]
    argv += ["--sft-updates", "30", "--offline-updates", "15", "--batch-size", "32", "--lams", "1e30", "1e-4"]
    argv += ["--rollouts", "3", "--rollout-noise", "0.5", "--eval-scenes", "2", "--envs", "3"]
    argv += ["--name", "micro", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert any(data.glob("*.mcap")), "the generated offline buffer is kept in --data-dir"
    result = json.loads((tmp_path / "out" / "micro.json").read_text())
    assert result["metric"] == "success" and 0.0 <= result["reference"]["value"] <= 1.0
    assert result["rollouts"]["episodes"] == 3 and len(result["rollouts"]["subtasks_done"]) == 3
    assert result["critic_rows"] == "reference rollouts"
    assert set(result["critic"]) >= {"action_gap", "gap_fraction", "grad_norm", "return_corr"}
    huge, tiny = result["runs"]
    assert [huge["lam"], tiny["lam"]] == [1e30, 1e-4]
    # With an enormous temperature QAM's target is the reference's own velocity, so the policy (which
    # starts as the reference) only drifts: Adam scales float rounding in the residual up to ~lr-sized
    # steps (measured 0.005 here). A tiny one follows grad_a Q far away from the reference (0.1).
    assert huge["shift"]["zero_noise"] < 0.03
    assert tiny["shift"]["zero_noise"] > 5 * huge["shift"]["zero_noise"]
    assert tiny["shift"]["unit_noise"] > 5 * huge["shift"]["unit_noise"]
    assert all(run["eval"]["episodes"] == 2 for run in result["runs"])
    assert result["git"]["commit"] and result["command"].startswith("python -m lwd_learner.extraction_probe")
    table = (tmp_path / "out" / "README.md").read_text()
    assert "| micro | " in table and "3 at noise 0.5" in table


def test_probe_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        ExtractionProbeConfig(task="laundry")
    with pytest.raises(ValueError, match="lams"):
        ExtractionProbeConfig(task="restocking", lams=(0.0,))
    with pytest.raises(ValueError, match="rollouts"):
        ExtractionProbeConfig(task="restocking", rollouts=-1)
