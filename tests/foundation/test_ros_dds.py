"""Two rclpy nodes in separate processes exchange an lwd_msgs message over real DDS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PEER = Path(__file__).resolve().parents[1] / "helpers" / "ros_peer.py"
pytestmark = pytest.mark.ros


def test_isolation_variables_are_set(ros_env):
    assert ros_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(ros_env["ROS_DOMAIN_ID"]) <= 101
    assert Path(ros_env["ROS_HOME"]).is_dir()


def test_episode_event_crosses_processes(ros_env):
    count = 5
    listener = subprocess.Popen(
        [sys.executable, str(PEER), "listen", "--count", str(count), "--timeout", "40"],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    talker = None
    try:
        assert listener.stdout.readline().strip() == "READY", listener.stderr.read()
        talker = subprocess.Popen(
            [sys.executable, str(PEER), "talk", "--count", str(count), "--timeout", "30"],
            env=ros_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert talker.wait(timeout=60) == 0, talker.stderr.read()
        out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err
    finally:
        for proc in (listener, talker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [line.split() for line in out.splitlines() if line.startswith("GOT")]
    assert [line[1] for line in lines] == [f"ep-{i}" for i in range(count)]
    first = lines[0]
    assert first[2:] == ["robot_01", "gongfu_tea", "100", "0", "7", "1"]
