"""ROS 2 node `policy_sync`: the robot's PolicySync, reporting on `policy/status` (lwd_msgs/PolicyStatus).

It publishes the policy slot's state on change and every `status_period_s` of wall time (reliable,
transient-local depth 1, so a controller that starts later still gets the latest state), and
listens on `controller/active_policy` (the controller latches it: reliable, transient-local) for
what the controller actually runs, which clears the pending version once swapped. The same state
is mirrored, retained, on MQTT `robots/<id>/status`.

Secrets never sit in the parameter file: the MQTT password and the S3 secret key are read from
files (`mqtt_password_file`, `s3_secret_key_file`); trusted public keys from `trusted_keys`
(comma-separated files or directories of *.pub / *.pem).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from builtin_interfaces.msg import Time
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from lwd_fleet.nodes.spin import run_node
from lwd_fleet.policy_sync import PolicySync, PolicySyncConfig
from lwd_msgs.msg import PolicyStatus
from lwd_protocol.announce import RobotPolicyStatus
from lwd_protocol.names import RosTopics
from lwd_protocol.robot_spec import CHUNK_HORIZON, JOINT_NAMES
from lwd_protocol.signing import load_trusted_keys
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, TlsSettings

DEFAULT_CACHE = "~/.cache/lwd_fleet/policies"


PARAMETERS: dict[str, tuple[Any, str]] = {
    "robot_id": ("robot_01", "this robot's id (MQTT user, topic level)"),
    "policy_cache_dir": (DEFAULT_CACHE, "verified policies land in <dir>/v%06d for the controller"),
    "trusted_keys": ("/etc/lwd/trusted_keys", "comma-separated public key files or directories"),
    "backend": ("auto", "auto | tensorrt | onnxruntime-cuda | onnxruntime-cpu"),
    "trt_cache_dir": ("", "TensorRT engine cache shared with the controller ('' = default)"),
    "ort_threads": (1, "onnxruntime threads used for validation"),
    "mqtt_host": ("127.0.0.1", "MQTT broker host"),
    "mqtt_port": (1883, "MQTT broker port"),
    "mqtt_username": ("", "MQTT user ('' = robot_id)"),
    "mqtt_password_file": ("", "file holding the MQTT password"),
    "mqtt_ca_file": ("", "CA file: enables TLS to the broker"),
    "s3_endpoint": ("127.0.0.1:8333", "object store host:port"),
    "s3_access_key": ("", "object store access key ('' = robot_id)"),
    "s3_secret_key_file": ("", "file holding the object store secret key"),
    "s3_secure": (False, "HTTPS to the object store"),
    "s3_ca_file": ("", "CA file for HTTPS to the object store"),
    "status_period_s": (1.0, "PolicyStatus heartbeat period"),
}


def _time_msg(t_ns: int) -> Time:
    return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


def _read_secret(path: str, what: str) -> str:
    if not path:
        raise ValueError(f"parameter {what} is required (a file holding the secret)")
    try:
        return Path(os.path.expanduser(path)).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc


def _desc(text: str):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=text)


class PolicySyncNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_sync")
        for name, (default, text) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor=_desc(text))

        def p(name: str):
            return self.get_parameter(name).value

        robot_id = str(p("robot_id"))
        mqtt_tls = TlsSettings(ca_file=str(p("mqtt_ca_file"))) if p("mqtt_ca_file") else None
        s3_tls = TlsSettings(ca_file=str(p("s3_ca_file"))) if p("s3_ca_file") else None
        key_paths = [os.path.expanduser(s.strip()) for s in str(p("trusted_keys")).split(",") if s.strip()]
        config = PolicySyncConfig(
            robot_id=robot_id,
            cache_dir=Path(os.path.expanduser(str(p("policy_cache_dir")))),
            mqtt=MqttEndpoint(
                str(p("mqtt_host")),
                int(p("mqtt_port")),
                str(p("mqtt_username")) or robot_id,
                _read_secret(str(p("mqtt_password_file")), "mqtt_password_file"),
                client_id=f"policy-sync-{robot_id}",
                tls=mqtt_tls,
            ),
            s3=S3Endpoint(
                str(p("s3_endpoint")),
                str(p("s3_access_key")) or robot_id,
                _read_secret(str(p("s3_secret_key_file")), "s3_secret_key_file"),
                secure=bool(p("s3_secure")),
                tls=s3_tls,
            ),
            trusted_keys=load_trusted_keys(key_paths),
            joint_names=JOINT_NAMES,  # the robot contract: policies must match it exactly
            horizon=CHUNK_HORIZON,
            backend=str(p("backend")),
            trt_cache_dir=Path(os.path.expanduser(str(p("trt_cache_dir")))) if p("trt_cache_dir") else None,
            ort_threads=int(p("ort_threads")) or None,
        )
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.status_pub = self.create_publisher(PolicyStatus, RosTopics.POLICY_STATUS, latched)
        # the controller latches controller/active_policy (reliable, transient-local): match it to get its last report
        self.create_subscription(PolicyStatus, RosTopics.ACTIVE_POLICY, self._on_active, latched)
        self._pub_lock = threading.Lock()
        self.sync = PolicySync(config, on_status=self._publish)
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # heartbeat even before a sim /clock exists
        self.create_timer(float(p("status_period_s")), lambda: self._publish(self.sync.status()), clock=steady)
        self.sync.start()
        self.get_logger().info(
            f"policy sync for {robot_id}: cache {config.cache_dir}, backend {config.backend}, "
            f"{len(config.trusted_keys)} trusted key(s) {sorted(config.trusted_keys)}"
        )

    def _on_active(self, msg: PolicyStatus) -> None:
        swap_ns = msg.last_swap_time.sec * 1_000_000_000 + msg.last_swap_time.nanosec
        self.sync.note_active(int(msg.active_version), msg.engine_backend, swap_ns)

    def _publish(self, status: RobotPolicyStatus) -> None:
        """Called from the sync thread on every change and from the timer: one publisher, one lock."""
        msg = PolicyStatus()
        msg.header.stamp = _time_msg(status.updated_at_ns)
        msg.robot_id = status.robot_id
        msg.active_version = status.active_version
        msg.pending_version = status.pending_version
        msg.engine_backend = status.engine_backend
        msg.last_swap_time = _time_msg(self.sync.last_swap_ns) if hasattr(self, "sync") else Time()
        msg.state = status.state
        msg.message = status.message
        with self._pub_lock:
            self.status_pub.publish(msg)

    def close(self) -> None:
        self.sync.stop()


def main(args: list[str] | None = None) -> None:
    run_node(PolicySyncNode, lambda node: node.close(), args)


if __name__ == "__main__":
    main()
