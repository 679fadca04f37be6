"""kill -9 chaos with the real sim fleet (issue #8, point 5): `lwd chaos` with a short window.

Two `lwd-robot` sim robots work while the broker, the object store, the Coordinator, the chaos
learner process and each robot's uplink child are SIGKILLed once each and come back. The test
reads the run's JSON report and asserts the real counts: every produced episode committed
exactly once, no corrupt or quarantined snapshot, policy versions strictly increasing with a
checkpoint resume after the learner kill, the last version active on both robots, no
joint_command gap over 0.5 s, every component recovered -- and nothing left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lwd_sim")
pytest.importorskip("jax2onnx")
pytestmark = [pytest.mark.slow, pytest.mark.ros]


def test_chaos_every_episode_exactly_once_and_every_component_recovers(tmp_path, ros_env):
    workdir, out = tmp_path / "chaos", tmp_path / "chaos.json"
    env = dict(ros_env, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    argv = [sys.executable, "-m", "lwd_learner.cli", "chaos", "--robots", "2", "--duration-s", "100",
            "--events-per-kind", "1", "--max-down-s", "6", "--seed", "8505",
            "--workdir", str(workdir), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "error" not in report, report.get("error")
    failed = {k: v for k, v in report["invariants"].items() if not v["ok"]}
    assert not failed, json.dumps(failed, indent=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # the chaos happened: each kind killed (each robot's uplink too) and restarted
    kinds = [e["kind"] for e in report["events"]]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "broker": 1, "store": 1, "coordinator": 1, "learner": 1, "uplink": 2,
    }  # fmt: skip
    assert {e["target"] for e in report["events"] if e["kind"] == "uplink"} == {"robot_01", "robot_02"}
    assert all(e["killed_at_s"] is not None and e["restarted_at_s"] is not None for e in report["events"])
    assert all(e["recover_s"] is not None for e in report["events"]), report["events"]
    for e in report["events"]:
        if e["kind"] == "uplink":  # respawned by lwd-robot after its 2 s respawn_delay
            assert 1.5 < e["measures"]["respawn_s"] < 30, e
            assert e["notes"]["new_pid"] != e["notes"]["old_pid"] and e["notes"]["old_pid_gone"]

    # exactly once, from the real counts
    episodes = report["episodes"]
    assert episodes["produced"] == episodes["committed"] > 0
    for robot, counts in episodes["per_robot"].items():
        assert counts["produced"] == counts["committed"] > 0, (robot, counts)
    snapshots = report["snapshots"]
    assert snapshots["corrupt"] == 0 and snapshots["quarantined"] == 0
    assert snapshots["objects_checked"] == episodes["committed"]

    # the learner came back from its checkpoint and never reused a version
    learner = report["learner"]
    versions = learner["published"]
    assert versions[0] == 1 and versions == sorted(set(versions)), versions
    assert len(learner["resumes"]) >= 1 and learner["starts"] >= 2
    assert learner["active_on_robots"] == {"robot_01": versions[-1], "robot_02": versions[-1]}

    # the robots' 30 Hz loops ran through all of it
    for robot, loop in report["control_loop"].items():
        assert loop["gaps_over_threshold"] == 0 and loop["max_gap_s"] <= 0.5, (robot, loop)
        assert loop["rate_hz"] > 25, (robot, loop)

    assert (out.with_suffix(".md")).read_text().count("| uplink robot_0") == 2
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes still running for {workdir}: {leftovers}"
