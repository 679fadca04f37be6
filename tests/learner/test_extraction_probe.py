"""The extraction probe runs end to end: generator data -> SFT reference -> its rollouts -> QAM per lambda."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lwd_learner.extraction_probe import ExtractionProbeConfig, PerturbedChunks, main, seed_group_lines


def test_probe_reports_reference_rollouts_critic_and_each_lambda(tmp_path: Path) -> None:
    data = tmp_path / "data"
    argv = ["--task", "restocking", "--profile", "quick", "--episodes-per-task", "6", "--data-dir", str(data)]
    argv += ["--sft-updates", "30", "--offline-updates", "15", "--batch-size", "32", "--lams", "1e30", "1e-4"]
    argv += ["--rollouts", "3", "--rollout-noise", "0.5", "--eval-scenes", "2", "--envs", "3"]
    argv += ["--select-n", "2", "3", "--select-noise", "0.7", "--select-candidates", "offset"]
    argv += ["--rollout-perturb-p", "0.5", "--mc-critic-updates", "5"]
    argv += ["--branch-scenes", "2", "--branch-width", "3", "--branch-held-out", "0.5"]
    argv += ["--name", "micro", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert any(data.glob("*.mcap")), "the generated offline buffer is kept in --data-dir"
    result = json.loads((tmp_path / "out" / "micro.json").read_text())
    assert result["metric"] == "success" and 0.0 <= result["reference"]["value"] <= 1.0
    assert result["rollouts"]["episodes"] == 3 and len(result["rollouts"]["subtasks_done"]) == 3
    assert 0 < result["rollouts"]["perturbed_chunks"] < result["rollouts"]["chunk_queries"]
    assert result["critic_rows"] == "reference rollouts + branches"
    branches = result["branches"]
    assert branches["scenes"] == 2 and branches["width"] == 3 and len(branches["groups"]) == 2
    assert all(len(g["success"]) == 3 for g in branches["groups"])
    reached = [g for g in branches["groups"] if g["state_spread"] is not None]
    # lockstep copies of one scene under the deterministic reference are identical when they split
    assert branches["identical_split_states"] == len(reached)
    assert branches["held_out_scenes"] == 1
    ranking = result["critic"]["branch_ranking"]  # one scene trained on, one held out
    assert ranking["train"]["mixed_groups"] + ranking["held_out"]["mixed_groups"] == branches["mixed_groups"]
    assert set(result["mc_critic"]["branch_ranking"]) == {"train", "held_out"}
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
    selection = result["selection"]
    assert selection["noise"] == 0.7 and selection["candidates"] == "offset" and selection["random_pick"]["n"] == 3
    assert [b["n"] for b in selection["best_of_n"]] == [2, 3]
    assert all(b["eval"]["episodes"] == 2 for b in [*selection["best_of_n"], selection["random_pick"]])
    mc = result["mc_critic"]
    assert mc["updates"] == 5 and mc["best_of_n"]["n"] == 3 and mc["best_of_n"]["eval"]["episodes"] == 2
    assert set(mc["critic"]) >= {"action_gap", "grad_norm"} and mc["final_loss"] >= 0
    # QAM against the Monte-Carlo critic alone, at the first lambda (huge: the policy barely moves)
    assert mc["qam"]["lam"] == 1e30 and mc["qam"]["eval"]["episodes"] == 2
    assert mc["qam"]["shift"]["zero_noise"] < 0.03
    assert result["git"]["commit"] and result["command"].startswith("python -m lwd_learner.extraction_probe")
    table = (tmp_path / "out" / "README.md").read_text()
    assert "| micro | " in table and "3 at noise 0.5" in table and "offset 0.7" in table and "perturbed by 0.5" in table


def test_probe_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        ExtractionProbeConfig(task="laundry")
    with pytest.raises(ValueError, match="lams"):
        ExtractionProbeConfig(task="restocking", lams=(0.0,))
    with pytest.raises(ValueError, match="rollouts"):
        ExtractionProbeConfig(task="restocking", rollouts=-1)
    with pytest.raises(ValueError, match="reference_data"):
        ExtractionProbeConfig(task="restocking", reference_data="everything")
    with pytest.raises(ValueError, match="rollout_perturb_p"):
        ExtractionProbeConfig(task="restocking", rollout_perturb_p=1.5)
    with pytest.raises(ValueError, match="select_n"):
        ExtractionProbeConfig(task="restocking", select_n=(1,))
    with pytest.raises(ValueError, match="mc_critic_updates"):
        ExtractionProbeConfig(task="restocking", mc_critic_updates=100)
    with pytest.raises(ValueError, match="width"):
        ExtractionProbeConfig(task="restocking", branch_scenes=4, branch_width=1)
    with pytest.raises(ValueError, match="branch_held_out"):
        ExtractionProbeConfig(task="restocking", branch_scenes=4, branch_held_out=1.0)


def test_perturbed_chunks_offsets_the_chosen_rows_smoothly() -> None:
    base = np.arange(8 * 30 * 4, dtype=np.float32).reshape(8, 30, 4) / 100.0

    def policy(obs, noise):
        return base

    untouched = PerturbedChunks(policy, p=0.0, scale=0.5, seed=0)
    np.testing.assert_array_equal(untouched(None, None), base)
    every = PerturbedChunks(policy, p=1.0, scale=0.5, seed=0)
    delta = every(None, None).astype(np.float64) - base
    assert (every.chunks, every.perturbed) == (8, 8)
    assert np.all(np.abs(delta[:, [0, -1]]).max(axis=(1, 2)) > 0)
    # linear in time between two endpoints: zero second difference along the chunk
    np.testing.assert_allclose(np.diff(delta, n=2, axis=1), 0.0, atol=1e-4)
    half = PerturbedChunks(policy, p=0.5, scale=0.5, seed=3)
    for _ in range(20):
        half(None, None)
    assert 0.3 < half.perturbed / half.chunks < 0.7


def _seed_run(seed: int, reference: float, qam: float, qam_mc: float) -> dict:
    """The fields of a probe result that the seed-group summary reads."""
    return {
        "config": {"seed": seed},
        "reference": {"value": reference},
        "runs": [{"lam": 0.01, "eval": {"value": qam}}],
        "mc_critic": {"qam": {"eval": {"value": qam_mc}}},
        "selection": {"best_of_n": [{"eval": {"value": 0.3}}], "random_pick": {"eval": {"value": 0.2}}},
    }


def test_seed_groups_report_mean_se_and_the_difference_from_each_seeds_reference(tmp_path: Path) -> None:
    runs = {"q-seed0": (0, 0.4, 0.45, 0.40), "q-seed1": (1, 0.5, 0.50, 0.56), "single": (0, 0.1, 0.1, 0.1)}
    for name, (seed, ref, qam, mc) in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(_seed_run(seed, ref, qam, mc)))
    lines = seed_group_lines(tmp_path)
    rows = [line for line in lines if line.startswith("| q |")]
    assert len(rows) == 1 and not any(line.startswith("| single") for line in lines)  # one run is no group
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # reference mean 0.45, SE = std([0.4, 0.5], ddof=1) / sqrt(2) = 0.05; QAM - ref = [0.05, 0.0] -> 0.025 ± 0.025;
    # MC QAM - ref = [0.0, 0.06] -> 0.030 ± 0.030
    assert cells[1] == "0, 1" and cells[2] == "0.450 ± 0.050"
    assert cells[3] == "0.01: 0.475 ± 0.025; +0.025 ± 0.025"
    assert cells[4] == "0.480 ± 0.080; +0.030 ± 0.030"
    assert cells[5] == "0.300 ± 0.000 (0.200 ± 0.000)"
    assert seed_group_lines(tmp_path / "empty") == []
