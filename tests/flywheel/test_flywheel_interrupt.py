"""Ctrl-C during `lwd flywheel`: it stops the fleet and the services it started, leaves no process
behind, still writes its report (marked interrupted) and exits 130."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

pytest.importorskip("lwd_sim")
pytestmark = [pytest.mark.slow, pytest.mark.ros]


def test_ctrl_c_stops_everything_it_started(quick_flywheel):
    workdir, argv, env = quick_flywheel
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # interrupt once the robots run their nodes (mid offline stage or later)
        logs = [workdir / "robots" / r / "robot.log" for r in ("robot_01", "robot_02")]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if all(p.is_file() and "started policy_sync" in p.read_text(errors="replace") for p in logs):
                break
            time.sleep(1.0)
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(5.0)
        started = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout.split()
        assert len(started) >= 2 * 7, f"expected the robots' nodes to be running: {started}"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted: stopping the fleet and the services" in out
    report = json.loads((workdir / "report" / "report.json").read_text())
    assert report["interrupted"] is True
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes still running for {workdir}: {leftovers}"
