"""The policy_sync ROS 2 node (separate process, real DDS on localhost): PolicyStatus on policy/status,
the controller's report on controller/active_policy clears pending, refusals carry the reason, and
the same state is retained on MQTT."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from helpers.policy_artifacts import build_tiny_artifact, clear_policy_plane, make_publisher, wait_until

from lwd_protocol.announce import RobotPolicyStatus
from lwd_protocol.names import RosTopics
from lwd_protocol.signing import generate_private_key, save_public_key

pytestmark = pytest.mark.ros


@pytest.fixture
def node_proc(ros_env, mqtt_broker, s3_store, tmp_path):
    clear_policy_plane(mqtt_broker, s3_store)
    key = generate_private_key()
    save_public_key(tmp_path / "keys" / "admin.pub", key)
    (tmp_path / "mqtt.pw").write_text(mqtt_broker.identity("robot_01").password)
    (tmp_path / "s3.secret").write_text(s3_store.identity("robot_01").secret_key)
    params = {
        "robot_id": "robot_01",
        "policy_cache_dir": tmp_path / "cache",
        "trusted_keys": tmp_path / "keys",
        "backend": "onnxruntime-cpu",
        "mqtt_host": mqtt_broker.host,
        "mqtt_port": mqtt_broker.port,
        "mqtt_password_file": tmp_path / "mqtt.pw",
        "s3_endpoint": s3_store.endpoint,
        "s3_access_key": s3_store.identity("robot_01").access_key,
        "s3_secret_key_file": tmp_path / "s3.secret",
        "status_period_s": 0.5,
    }
    argv = [sys.executable, "-m", "lwd_fleet.nodes.policy_sync_node", "--ros-args"]
    for name, value in params.items():
        argv += ["-p", f"{name}:={value}"]
    log = open(tmp_path / "node.log", "w")
    proc = subprocess.Popen(argv, env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, key, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        clear_policy_plane(mqtt_broker, s3_store)


def test_node_reports_over_ros_and_mqtt_and_follows_the_controller(node_proc, mqtt_broker, s3_store):
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from lwd_msgs.msg import PolicyStatus

    proc, key, tmp_path = node_proc
    rclpy.init()
    node = rclpy.create_node("policy_sync_probe")
    try:
        got: list[PolicyStatus] = []
        latched = QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        node.create_subscription(PolicyStatus, RosTopics.POLICY_STATUS, got.append, latched)
        controller = node.create_publisher(PolicyStatus, RosTopics.ACTIVE_POLICY, latched)  # as the controller does

        def spin_until(pred, timeout_s: float) -> bool:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
                if pred():
                    return True
                assert proc.poll() is None, (tmp_path / "node.log").read_text()
            return False

        def latest(**want) -> bool:
            return bool(got) and all(getattr(got[-1], k) == v for k, v in want.items())

        assert spin_until(lambda: bool(got), 30), (tmp_path / "node.log").read_text()
        assert got[-1].robot_id == "robot_01" and got[-1].state == "idle" and got[-1].active_version == 0

        build_tiny_artifact(tmp_path / "a1", 1)
        with make_publisher(mqtt_broker, s3_store, key) as pub:
            t0 = time.monotonic()
            pub.publish(tmp_path / "a1")
            assert spin_until(lambda: latest(state="ready", pending_version=1), 30), got[-3:]
            ros_latency = time.monotonic() - t0
            assert got[-1].engine_backend == "onnxruntime-cpu" and "v1 ready" in got[-1].message
            assert (tmp_path / "cache" / "v000001" / "policy.onnx").is_file()

            swap = PolicyStatus(robot_id="robot_01", active_version=1, engine_backend="onnxruntime-cpu", state="idle")
            swap.last_swap_time.sec = 1_700_000_000

            def swapped() -> bool:
                controller.publish(swap)
                return latest(state="idle", active_version=1, pending_version=0)

            assert spin_until(swapped, 20), got[-3:]
            assert got[-1].last_swap_time.sec == 1_700_000_000

            build_tiny_artifact(tmp_path / "a2", 2, 1)  # unsigned, and uploaded without signing
            upload = pub.upload(tmp_path / "a2", sign=False)
            pub.announce("publish", upload.manifest, upload.manifest_sha256)
            assert spin_until(lambda: any(m.state == "rejected" and "unsigned" in m.message for m in got), 30)
            assert latest(active_version=1, pending_version=0)
            assert wait_until(lambda: _mqtt_status(pub).rejected_version == 2, 10)
            mirrored = _mqtt_status(pub)
            assert (mirrored.active_version, mirrored.state) == (1, "rejected")
            assert "unsigned" in mirrored.rejected_reason
    finally:
        node.destroy_node()
        rclpy.shutdown()
    print(f"\nROS node: publish -> PolicyStatus ready on policy/status in {ros_latency * 1000:.0f} ms")


def _mqtt_status(pub) -> RobotPolicyStatus:
    status = pub.robot_statuses().get("robot_01")
    assert isinstance(status, RobotPolicyStatus), status
    return status
