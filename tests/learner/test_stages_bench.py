"""Learning benchmark plumbing: mean +- s.e., table shapes, orderings, the method registry hook and a
micro run that writes JSON + markdown with the command and commit."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
import dataclasses
import json
import math
import statistics

import numpy as np
import pytest

from lwd_learner import bench_learning as bench
from lwd_learner.evaluate import EvalResult, TaskEval
from lwd_learner.stages import OfflineConfig, OnlineConfig, SFTConfig


def _eval(values: dict[str, float]) -> EvalResult:
    per_task = {}
    for task, value in values.items():
        long = task == "gongfu_tea"
        per_task[task] = TaskEval(
            task,
            "long_horizon" if long else "grocery",
            "score" if long else "success",
            value,
            value,
            value,
            4,
            10.0,
            12.0,
        )
    return EvalResult(per_task)


def test_mean_se_matches_statistics() -> None:
    values = [0.2, 0.5, 0.9, 0.4]
    mean, se, n = bench.mean_se(values)
    assert mean == pytest.approx(statistics.mean(values))
    assert se == pytest.approx(statistics.stdev(values) / math.sqrt(4))
    assert n == 4
    assert bench.mean_se([0.3, float("nan")])[2] == 1 and math.isnan(bench.mean_se([0.3])[1])
    assert bench.fmt([0.25, 0.75]) == "0.50 ± 0.25"


def test_tables_and_orderings() -> None:
    tasks = ("restocking", "gongfu_tea")
    rows = {
        "SFT": [_eval({"restocking": 0.5, "gongfu_tea": 0.2}), _eval({"restocking": 0.7, "gongfu_tea": 0.4})],
        "LWD (Offline)": [_eval({"restocking": 0.8, "gongfu_tea": 0.5})] * 2,
        "LWD (Online)": [_eval({"restocking": 0.9, "gongfu_tea": 0.7})] * 2,
        "Expectile (Offline)": [_eval({"restocking": 0.8, "gongfu_tea": 0.6})] * 2,
        "Expectile (Online)": [_eval({"restocking": 0.8, "gongfu_tea": 0.6})] * 2,
        "LWD Offline, constant tau": [_eval({"restocking": 0.8, "gongfu_tea": 0.5})] * 2,
    }
    tables = bench.build_tables(rows, tasks, constant_tau=0.52)
    t1 = tables["aggregate"]["table1"]
    assert list(t1) == ["SFT", "LWD (Offline)", "LWD (Online)"]
    assert t1["SFT"]["average"]["mean"] == pytest.approx((0.35 + 0.55) / 2)
    assert t1["SFT"]["gongfu_tea"]["se"] == pytest.approx(0.1)
    assert "| SFT | 0.60 ± 0.10 | 0.30 ± 0.10 |" in tables["markdown"]["table1"]
    t2 = tables["aggregate"]["table2"]
    assert t2["Expectile Regression"]["long_horizon_offline"]["mean"] == pytest.approx(0.6)
    assert t2["DIVL (Ours)"]["grocery_online"]["mean"] == pytest.approx(0.9)
    assert "τ = 0.520" in tables["markdown"]["table3"]
    checks = {c["claim"]: c["holds"] for c in bench.orderings(rows, tasks)}
    assert checks["LWD (Online) > SFT on the long-horizon average"]
    assert not checks["DIVL > expectile, offline, long-horizon"]  # 0.5 vs 0.6: reported, not hidden
    assert checks["adaptive τ ≥ constant τ (offline average)"]


def test_register_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="lwd bench")
    sub = parser.add_subparsers()
    bench.register(sub)
    args = parser.parse_args(["learning", "--profile", "cpu", "--seeds", "4", "--methods", "sft", "lwd"])
    assert args.profile == "cpu" and args.seeds == 4 and args.methods == ["sft", "lwd"] and callable(args.func)
    assert set(bench.PROFILES) >= {"quick", "cpu"}
    args = parser.parse_args(["learning", "--episodes-per-task", "12"])
    assert args.episodes_per_task == 12 and args.profile == "quick"
    assert parser.parse_args(["learning", "--qam-lam", "0.01"]).qam_lam == 0.01
    with pytest.raises(ValueError, match="unknown method"):
        bench.run("quick", methods=["nope"])
    with pytest.raises(ValueError, match="episodes_per_task must be >= 1"):
        bench.run("quick", episodes_per_task=0)


def _micro_profile(**overrides) -> bench.BenchProfile:
    """The quick profile cut to one task, 3 episodes, 8-wide networks and a 30-tick time limit."""
    base = dataclasses.replace(
        bench.PROFILES["quick"],
        name="micro",
        tasks=("restocking",),
        episodes_per_task=3,
        network=dataclasses.replace(bench.PROFILES["quick"].network, policy_hidden=(8,), obs_hidden=(8,)),
        flow_steps=2,
        sft=SFTConfig(num_updates=2, batch_size=4, log_every=1),
        eval_episodes_per_task=1,
        max_steps=30,
    )
    return dataclasses.replace(base, **overrides)


def test_micro_run_with_a_registered_method(tmp_path, monkeypatch) -> None:
    """Data generation -> MCAP -> replay -> SFT per seed -> a plugged-in method -> result files.

    A method that crashes last leaves the results of the methods before it on disk, marked incomplete."""
    seen = []

    def constant_method(ctx: bench.MethodContext) -> bench.MethodResult:
        seen.append((ctx.seed, ctx.sft_log.updates, len(ctx.offline), ctx.normalizer.obs_dim))
        # The online fleet runs the sampler the policies are evaluated with.
        assert (ctx.online.execute_steps, ctx.online.noise_scale) == (5, 0.5)
        value = 0.25 if ctx.seed == 0 else 0.75
        return bench.MethodResult(rows={"LWD (Online)": _eval({"restocking": value})})

    def crashing_method(ctx: bench.MethodContext) -> bench.MethodResult:
        raise RuntimeError("out of time")

    monkeypatch.setitem(bench.METHODS, "constant_test", constant_method)
    monkeypatch.setitem(bench.METHODS, "crash_test", crashing_method)
    profile = _micro_profile(
        seeds=2,
        offline=OfflineConfig(num_updates=1, batch_size=4),
        online=OnlineConfig(num_rounds=1, updates_per_round=1, batch_size=4),
        methods=("sft", "constant_test", "crash_test"),
        eval_execute_steps=5,
        eval_noise_scale=0.5,
    )
    with pytest.raises(RuntimeError, match="out of time"):
        bench.run(profile, out_dir=tmp_path, command="pytest micro run", log=lambda _: None, sft_updates=3)
    assert [s[0] for s in seen] == [0, 1] and all(s[1] == 3 and s[2] > 0 for s in seen)  # --sft-updates
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["command"] == "pytest micro run" and len(saved["git"]["commit"]) in (40, 7)
    assert saved["incomplete"] == "methods still to run: ['crash_test']"
    assert saved["tables"]["table1"]["LWD (Online)"]["restocking"]["mean"] == pytest.approx(0.5)
    assert saved["tables"]["table1"]["LWD (Online)"]["restocking"]["se"] == pytest.approx(0.25)
    assert saved["tables"]["table1"]["SFT"]["restocking"]["n"] == 2
    markdown = (tmp_path / "results.md").read_text()
    assert "pytest micro run" in markdown and "| LWD (Online) | 0.50 ± 0.25 |" in markdown
    assert "incomplete run" in markdown and "replan every 5 ticks, flow noise scale 0.5" in markdown
    assert np.isfinite(saved["speed"]["sft/sft"]["updates_per_s"][0])


def test_micro_lwd_run_reports_the_critic_and_its_lambda(tmp_path, monkeypatch) -> None:
    """The real LWD method (offline + online) on a micro profile: ``qam_lam`` reaches the agent's config,
    and the critic diagnostics of both stages land in results.json and results.md."""
    lams = []

    def lwd_spy(ctx: bench.MethodContext) -> bench.MethodResult:
        lams.append((ctx.config("offline").policy.lam, ctx.config("online").policy.lam))
        return bench._method_lwd(ctx)

    monkeypatch.setitem(bench.METHODS, "lwd_spy", lwd_spy)
    profile = _micro_profile(
        seeds=1,
        offline=OfflineConfig(num_updates=2, batch_size=4, log_every=1),
        online=OnlineConfig(num_rounds=1, updates_per_round=2, batch_size=4, publish_every=1, log_every=1),
        online_episodes_per_task=1,
        methods=("lwd_spy",),
    )
    report = bench.run(profile, out_dir=tmp_path, command="pytest lwd micro run", log=lambda _: None, qam_lam=0.5)
    assert lams == [(0.5, 0.5)] and report["config"]["qam_lam"] == 0.5
    saved = json.loads((tmp_path / "results.json").read_text())
    for stage in ("offline", "online"):
        probe = saved["critic"][f"lwd_spy/{stage}"]
        assert set(probe) == {
            "action_gap",
            "gap_fraction",
            "perturbed_gap",
            "grad_norm",
            "q_mean",
            "return_mean",
            "return_corr",
        }
        assert probe["grad_norm"][2] == 1 and np.isfinite(probe["grad_norm"][0]) and 0 <= probe["gap_fraction"][0] <= 1
    markdown = (tmp_path / "results.md").read_text()
    assert "## Critic: does Q rank actions?" in markdown and "| lwd_spy/online |" in markdown
    assert "## Online rounds (per round)" in markdown and "\n| lwd_spy | " in markdown
    assert "QAM temperature λ: 0.5" in markdown
    with pytest.raises(ValueError, match="qam_lam must be > 0"):
        bench.run(profile, out_dir=tmp_path, qam_lam=0.0)
