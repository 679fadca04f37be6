"""`lwd-robot` brings up the whole robot (sim driver, cameras, controller, teleop, recorder,
uplink, policy sync) under a namespace against real mosquitto + SeaweedFS, episodes start
flowing into the recorder, a SIGKILLed uplink is respawned and reports again, and SIGINT stops
every node cleanly with no process left behind. The respawn rules themselves (respawn only
where the NodeSpec says so, after the delay, never during a stop) are checked on tiny real
child processes, without ROS."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lwd_fleet.bringup import ROBOT_NODES, Bringup, Launch

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "ros2_ws/src/lwd_fleet/config/robot.yaml"
ROBOT = "robot_01"
NAMESPACE = "/robot_01"


def _test_params(tmp_path: Path, broker, store) -> Path:
    """The shipped robot.yaml, pointed at this test's services, directories and secrets."""
    from lwd_protocol.signing import generate_private_key, save_public_key

    data = yaml.safe_load(PARAMS.read_text())
    mq, s3 = broker.identity(ROBOT), store.identity(ROBOT)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "mqtt").write_text(mq.password)
    (secrets / "s3").write_text(s3.secret_key)
    keys = tmp_path / "trusted_keys"
    keys.mkdir()
    save_public_key(keys / "learner.pub", generate_private_key())
    for f in secrets.iterdir():
        f.chmod(0o600)
    data["/**"]["ros__parameters"].update(
        robot_id=ROBOT,
        spool_dir=str(tmp_path / "spool"),
        policy_cache_dir=str(tmp_path / "policies"),
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_username=mq.username,
        mqtt_password_file=str(secrets / "mqtt"),
        s3_endpoint=store.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key_file=str(secrets / "s3"),
    )
    data["/**/sim_driver"]["ros__parameters"]["image_size"] = 64
    data["/**/teleop"]["ros__parameters"]["joystick_source"] = "topic"  # no gamepad on a test machine
    data["/**/policy_sync"]["ros__parameters"]["trusted_keys"] = str(keys)
    data["/**/uplink"]["ros__parameters"]["s3_region"] = store.region
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _wait(predicate, timeout_s: float, every_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return bool(predicate())


FAKE_NODE = """#!{python}
import signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def test_bringup_respawns_only_respawnable_children_and_never_while_stopping(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "lwd-fake-node"
    exe.write_text(FAKE_NODE.format(python=sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    params = tmp_path / "robot.yaml"
    launches = [
        Launch("lwd-fake-node", "uplink", "", params, respawn=True, respawn_delay=0.5),
        Launch("lwd-fake-node", "controller", "", params),
    ]
    bringup = Bringup(launches, sigint_timeout_s=5.0, sigterm_timeout_s=2.0)
    bringup.start()
    result: dict[str, int] = {}
    runner = threading.Thread(target=lambda: result.update(rc=bringup.run()), daemon=True)
    runner.start()
    first = dict(bringup.procs)
    try:
        os.kill(first["uplink"].pid, signal.SIGKILL)
        assert _wait(lambda: bringup.respawns.get("uplink") == 1, 10), "uplink was not respawned"
        second = bringup.procs["uplink"]
        assert second.pid != first["uplink"].pid and second.poll() is None
        assert first["uplink"].poll() == -signal.SIGKILL

        os.kill(first["controller"].pid, signal.SIGKILL)  # not respawnable: stays down
        time.sleep(1.5)
        assert bringup.procs["controller"] is first["controller"] and "controller" not in bringup.respawns

        os.kill(second.pid, signal.SIGKILL)  # dies, but the stop comes before its respawn delay is over
        assert _wait(lambda: second.poll() is not None, 5)
        bringup.request_stop(signal.SIGINT)
        runner.join(15)
        assert not runner.is_alive()
        assert result["rc"] == 1  # the controller died on its own: not a clean run
        time.sleep(1.0)
        assert bringup.respawns == {"uplink": 1}, bringup.respawns
        assert all(p.poll() is not None for p in bringup.procs.values())
    finally:
        bringup.request_stop(signal.SIGINT)
        runner.join(15)
        for proc in [*first.values(), *bringup.procs.values()]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


@pytest.mark.ros
@pytest.mark.slow
def test_bringup_starts_every_node_and_stops_them_cleanly(ros_env, mqtt_broker, s3_store, tmp_path):
    pytest.importorskip("lwd_sim")
    import rclpy
    from std_msgs.msg import String

    params = _test_params(tmp_path, mqtt_broker, s3_store)
    log = tmp_path / "bringup.log"
    exe = Path(sys.executable).parent / "lwd-robot"
    argv = [str(exe), "--params", str(params), "--namespace", NAMESPACE, "--sigint-timeout", "20"]
    env = dict(ros_env, MUJOCO_GL=ros_env.get("MUJOCO_GL", "egl"))
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    rclpy.init()
    node = rclpy.create_node("bringup_probe", namespace=NAMESPACE)
    status: dict = {}
    node.create_subscription(String, "recorder/status", lambda m: status.update(json.loads(m.data)), 10)
    uplink_reports: list[float] = []  # arrival times of uplink/status
    node.create_subscription(String, "uplink/status", lambda m: uplink_reports.append(time.monotonic()), 10)
    expected = {(n.name, NAMESPACE) for n in ROBOT_NODES}
    try:
        deadline = time.monotonic() + 120
        seen: set = set()
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
            seen = set(node.get_node_names_and_namespaces()) & expected
            if seen == expected and status.get("state") == "recording" and status.get("steps", 0) > 0:
                break
            assert proc.poll() is None, f"lwd-robot exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        assert seen == expected, f"missing nodes {expected - seen}:\n{log.read_text()[-4000:]}"
        assert status.get("state") == "recording" and status["steps"] > 0, f"recorder {status}"
        pids = {m[0]: int(m[1]) for m in re.findall(r"started (\w+) \(pid (\d+)\)", log.read_text())}
        assert set(pids) == {n.name for n in ROBOT_NODES}
        assert all(_alive(pid) for pid in pids.values())

        # a SIGKILLed uplink (a stateless bridge) is respawned by lwd-robot and reports again
        os.killpg(pids["uplink"], signal.SIGKILL)
        respawned: list[tuple[str, str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not respawned:
            rclpy.spin_once(node, timeout_sec=0.1)
            respawned = re.findall(r"respawned uplink \(pid (\d+)\), respawn (\d+)", log.read_text())
        assert respawned == [(respawned[0][0], "1")], log.read_text()[-4000:]
        seen_at = time.monotonic()  # status arriving after this comes from the new process
        new_uplink = int(respawned[0][0])
        assert new_uplink != pids["uplink"] and _alive(new_uplink) and not _alive(pids["uplink"])
        assert f"uplink (pid {pids['uplink']}) exited with code -9; respawning in" in log.read_text()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(t > seen_at for t in uplink_reports):
            rclpy.spin_once(node, timeout_sec=0.1)
        assert any(t > seen_at for t in uplink_reports), "the respawned uplink never reported"
        pids["uplink"] = new_uplink
        assert all(_alive(pid) for pid in pids.values())  # nothing else was restarted or lost

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        node.destroy_node()
        rclpy.shutdown()
    stray = [name for name, pid in pids.items() if _alive(pid)]
    assert not stray, f"still running after lwd-robot stopped: {stray}"
    assert "still running after" not in log.read_text()  # all stopped on SIGINT, none needed SIGTERM/SIGKILL
