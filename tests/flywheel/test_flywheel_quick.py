"""End to end: `lwd flywheel --quick` closes the loop once on real services and a ROS 2 sim fleet.

Deploy (v1 from the offline stage) -> robots run it and upload -> the learner trains on mixed
replay -> v2 is published and hot-swapped at an episode boundary. Checks the report's numbers,
not timings, and that nothing it started is left running.
"""

from __future__ import annotations

import json
import subprocess

import pytest

pytest.importorskip("lwd_sim")
pytest.importorskip("jax2onnx")
pytestmark = [pytest.mark.slow, pytest.mark.ros]


def test_quick_flywheel_closes_the_loop(quick_flywheel):
    workdir, argv, env = quick_flywheel
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((workdir / "report" / "report.json").read_text())
    versions = [p["version"] for p in report["published"]]
    assert versions[:2] == [1, 2], versions  # offline policy, then at least one online update
    episodes = report["episodes"]
    assert episodes, "no online episode reached the learner"
    driven = {e["policy_version"] for e in episodes}
    assert 1 in driven, f"no episode was driven by the published policy: {driven}"
    # hot swaps wait for the episode boundary: no episode's policy steps span two versions
    mixed = [(e["robot"], e["policy_versions"]) for e in episodes if len(e["policy_versions"]) > 1]
    assert not mixed, f"policy swapped mid-episode: {mixed}"
    assert all(e["snapshot"] >= 1 for e in episodes)
    assert all(e["score"] == 1.0 for e in episodes if e["success"]), "a success with subtasks left undone"
    assert {e["robot"] for e in episodes} == {"robot_01", "robot_02"}
    newest = versions[-1]
    assert report["active"] == {"robot_01": newest, "robot_02": newest}, report["active"]
    assert {x["robot"] for x in report["swaps"] if x["version"] == newest} == {"robot_01", "robot_02"}
    online_trained = [p for p in report["published"] if p["snapshot"] >= 1]
    assert online_trained, "no published version was trained on online data"
    assert (workdir / "report" / "report.md").is_file()
    # each published state is kept as a checkpoint an admin can re-push (`lwd admin push --checkpoint`)
    from lwd_learner.checkpoint import Checkpointer

    with Checkpointer(workdir / "checkpoints", max_to_keep=None) as checkpointer:
        assert checkpointer.all_steps() == versions
        step, _, extra = checkpointer.read_meta(newest)
        assert step == newest
        assert extra["published_version"] == newest and "policy_io" in extra
    # every robot process tree is gone
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes still running for {workdir}: {leftovers}"
