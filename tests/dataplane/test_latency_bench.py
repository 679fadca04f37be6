"""The latency benchmark's machinery on a tiny fleet. No timing is asserted: measuring is the bench's job."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "learner" / "bench" / "bench_latency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_latency", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_latency"] = module
    spec.loader.exec_module(module)
    return module


def test_stats_are_linear_interpolation_percentiles(bench):
    # by hand: sorted [10, 20, 30, 40]; p50 = 25; p99 at rank 0.99*3 = 2.97 -> 30 + 0.97*10 = 39.7
    s = bench._stats([40.0, 10.0, 30.0, 20.0])
    assert (s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"], s["mean_ms"]) == (4, 25.0, 39.7, 40.0, 25.0)
    assert bench._stats([]) == {"n": 0}


def test_policy_results_measure_from_the_publish_call(bench, tmp_path):
    folder = tmp_path / "v000001"
    folder.mkdir()
    (folder / "policy.onnx").write_bytes(b"x" * 1000)
    published = {1: {"call": 100.0, "announced": 100.4}, 2: {"call": 200.0, "announced": 200.5}}
    robots = {
        "robot_01": {  # swapped to both
            "policy": {
                "1": {"received": 100.5, "ready": 101.0, "loaded": 101.5, "active": 110.0},
                "2": {"received": 200.6, "ready": 201.0, "loaded": 201.2, "active": 201.2},
                "errors": [],
            }
        },
        "robot_02": {  # v2 was staged before its next boundary: v1 never ran, by design
            "policy": {
                "1": {"received": 100.7, "ready": 101.2, "loaded": 101.9, "active": None},
                "2": {"received": 200.5, "ready": 201.5, "loaded": 202.0, "active": 230.0},
                "errors": ["v9: refused"],
            }
        },
    }
    r = bench.policy_results(robots, published, [], {1: folder}, True)
    assert r["measured"] and r["versions"] == [1, 2] and r["artifact_mb"] == 0.0
    assert r["publish_call_s"] == {1: 0.4, 2: 0.5}
    # ready: 1000, 1200, 1000, 1500 ms -> p50 1100, max 1500
    assert r["publish_to_ready"]["n"] == 4
    assert (r["publish_to_ready"]["p50_ms"], r["publish_to_ready"]["max_ms"]) == (1100.0, 1500.0)
    assert r["publish_to_active"]["n"] == 3 and r["publish_to_active"]["max_ms"] == 30000.0
    # boundary wait = active - loaded: 8500, 0, 28000
    assert r["loaded_to_active_boundary_wait"]["max_ms"] == 28000.0
    assert r["superseded_before_a_boundary"] == ["robot_02 v1"] and r["never_active"] == []
    assert r["errors"] == ["robot_02: v9: refused"]


@pytest.mark.slow
def test_tiny_fleet_every_episode_reaches_the_learner(bench, tmp_path):
    cfg = bench.BenchConfig(
        robots=2,
        episode_seconds=2.0,
        episodes_per_robot=2,
        image_size=32,
        frames="noise",
        policy=False,
        timeout_s=180,
        workdir=tmp_path / "work",
        cache_dir=tmp_path / "cache",
    )
    report = bench.run(cfg)
    episodes = report["episodes"]
    assert len(episodes) == 4 and len({e["episode_id"] for e in episodes}) == 4
    assert {e["robot"] for e in episodes} == {"robot_01", "robot_02"}
    assert all(e["load_status"] == "ok" and e["version"] >= 1 for e in episodes)
    for e in episodes:  # the stages add up to the end-to-end number (each rounded to 0.1 ms)
        parts = e["commit_to_verified_ms"] + e["verified_to_snapshot_ms"] + e["snapshot_to_visible_ms"]
        assert parts == pytest.approx(e["commit_to_visible_ms"], abs=0.3)
        assert e["commit_to_loaded_ms"] >= e["commit_to_visible_ms"] > 0
    for key in ("episode_to_learner", "episode_to_loaded"):
        s = report[key]
        assert s["n"] == 4 and s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert report["config"]["recorder_defaults"]["image_compression"] in ("none", "jpeg", "png")
    assert report["policy_publish_to_active"] == {"measured": False, "reason": "--no-policy"}
    assert report["command"] and report["commit"]
    assert not list((tmp_path / "work" / "robots").glob("*/spool/*.mcap")), "robots drained their spools"
