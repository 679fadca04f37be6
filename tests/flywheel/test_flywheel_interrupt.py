"""Ctrl-C during `lwd flywheel`: it stops the fleet and the services it started, leaves no process
behind, still writes its report (marked interrupted) and exits 130.

The run is started with SIGINT *ignored*, the disposition a process inherits from a non-interactive
shell's background job (`make test &`, CI runners): the CLI must install its own handler. Relying on
Python's default made this test pass in a foreground terminal and fail (the run never stopped, or
finished normally) when the suite ran in the background.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

pytest.importorskip("lwd_sim")
pytestmark = [pytest.mark.slow, pytest.mark.ros]


def _pids_under(workdir) -> list[int]:
    found = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def _with_sigint_ignored(argv: list[str]) -> list[str]:
    """argv exec'd with SIGINT ignored, as a background job of a non-interactive shell starts."""
    return ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv]


def test_ctrl_c_stops_everything_it_started(quick_flywheel):
    workdir, argv, env = quick_flywheel
    argv = _with_sigint_ignored(argv)
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
        started = _pids_under(workdir)
        assert len(started) >= 2 * 7, f"expected the robots' nodes to be running: {started}"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = _pids_under(workdir)
        for pid in leftovers:  # a failed run must not leave its fleet and services behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted: stopping the fleet and the services" in out
    report = json.loads((workdir / "report" / "report.json").read_text())
    assert report["interrupted"] is True
    assert not leftovers, f"processes still running for {workdir}: {leftovers}"
