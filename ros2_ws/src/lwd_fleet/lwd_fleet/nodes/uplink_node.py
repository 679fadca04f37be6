"""Uplink node: the EpisodeUplink library (spool -> S3 -> MQTT announce -> delete) as a ROS node.

All the work (retries with backoff, idempotent keys, PUBACK before delete, rejected/ for
unreadable files) lives in lwd_fleet.uplink; this node reads its parameters, runs it on its own
thread and publishes its counters as JSON on ``uplink/status`` so operators and the bring-up see
a stuck uplink (spool growing, last error) without logging into the robot.

Secrets never go into the robot's parameter YAML: the MQTT password and the S3 secret key are
read from files (``mqtt_password_file``, ``s3_secret_key_file``, readable by the robot user
only). The connection parameters have the same names as policy sync's, so one ``/**`` block of
the robot YAML configures both (they log in as the same robot identity).
"""

from __future__ import annotations

import json
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from std_msgs.msg import String

from lwd_fleet.nodes.spin import run_node
from lwd_fleet.uplink import EpisodeUplink, UplinkConfig
from lwd_protocol.names import RosTopics, validate_robot_id
from lwd_protocol.store import EPISODES_BUCKET
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, TlsSettings

# std_msgs/String, JSON; read from lwd_protocol.names once it defines it
UPLINK_STATUS_TOPIC: str = RosTopics.UPLINK_STATUS


# name -> (default, description)
PARAMETERS: dict[str, tuple[Any, str]] = {
    "robot_id": ("robot_01", "this robot's id: MQTT user, topic level and S3 key prefix"),
    "spool_dir": ("/var/lib/lwd/spool", "the recorder's spool directory"),
    "max_spool_bytes": (20 * 1024**3, "spool size reported as full above this"),
    "mqtt_host": ("127.0.0.1", "MQTT broker host"),
    "mqtt_port": (1883, "MQTT broker port"),
    "mqtt_username": ("", "MQTT user ('' = robot_id)"),
    "mqtt_password_file": ("", "file holding the MQTT password"),
    "mqtt_ca_file": ("", "CA file: enables TLS to the broker"),
    "s3_endpoint": ("127.0.0.1:8333", "object store host:port"),
    "s3_access_key": ("", "object store access key ('' = robot_id)"),
    "s3_secret_key_file": ("", "file holding the object store secret key"),
    "s3_secure": (False, "HTTPS to the object store"),
    "s3_ca_file": ("", "CA file for the object store's TLS ('' = system trust store)"),
    "s3_region": ("us-east-1", "S3 region"),
    "bucket": (EPISODES_BUCKET, "episodes bucket"),
    "poll_interval_s": (0.5, "spool scan period"),
    "backoff_initial_s": (0.5, "first retry delay of a failing episode"),
    "backoff_max_s": (60.0, "largest retry delay"),
    "puback_timeout_s": (10.0, "wait this long for the broker's PUBACK"),
    "status_period_s": (1.0, "period of uplink/status"),
}


class CredentialsError(ValueError):
    """A secret file that is not configured, missing or empty; the message names the parameter."""


def read_secret_file(path: str, parameter: str) -> str:
    """The secret in `path` (surrounding whitespace stripped)."""
    if not path:
        raise CredentialsError(f"parameter {parameter} is required (a file holding the secret)")
    p = Path(path).expanduser()
    try:
        secret = p.read_text().strip()
    except FileNotFoundError:
        raise CredentialsError(f"{parameter}: {p} does not exist") from None
    except OSError as exc:
        raise CredentialsError(f"{parameter}: {p} is unreadable: {exc}") from exc
    if not secret:
        raise CredentialsError(f"{parameter}: {p} is empty")
    return secret


class UplinkNode(Node):
    def __init__(self) -> None:
        super().__init__("uplink")
        v = {
            name: self.declare_parameter(name, default, ParameterDescriptor(description=text)).value
            for name, (default, text) in PARAMETERS.items()
        }
        robot_id = validate_robot_id(v["robot_id"])
        mqtt_password = read_secret_file(v["mqtt_password_file"], "mqtt_password_file")
        s3_secret = read_secret_file(v["s3_secret_key_file"], "s3_secret_key_file")
        for secret_param in ("mqtt_password_file", "s3_secret_key_file"):
            self._warn_if_readable_by_others(Path(v[secret_param]).expanduser())
        mqtt_tls = TlsSettings(ca_file=v["mqtt_ca_file"]) if v["mqtt_ca_file"] else None
        s3_tls = TlsSettings(ca_file=v["s3_ca_file"] or None) if v["s3_secure"] else None
        self.config = UplinkConfig(
            robot_id=robot_id,
            spool_dir=Path(v["spool_dir"]).expanduser(),
            mqtt=MqttEndpoint(
                host=v["mqtt_host"],
                port=int(v["mqtt_port"]),
                username=v["mqtt_username"] or robot_id,
                password=mqtt_password,
                client_id=f"uplink-{robot_id}",
                tls=mqtt_tls,
            ),
            s3=S3Endpoint(
                endpoint=v["s3_endpoint"],
                access_key=v["s3_access_key"] or robot_id,
                secret_key=s3_secret,
                region=v["s3_region"],
                secure=bool(v["s3_secure"]),
                tls=s3_tls,
            ),
            bucket=v["bucket"],
            max_spool_bytes=int(v["max_spool_bytes"]),
            poll_interval_s=float(v["poll_interval_s"]),
            backoff_initial_s=float(v["backoff_initial_s"]),
            backoff_max_s=float(v["backoff_max_s"]),
            puback_timeout_s=float(v["puback_timeout_s"]),
        )
        self.uplink = EpisodeUplink(self.config).start()
        self.status_pub = self.create_publisher(String, UPLINK_STATUS_TOPIC, 10)
        self.create_timer(float(v["status_period_s"]), self._publish_status)
        self.get_logger().info(
            f"uplink: robot={robot_id} spool={self.config.spool_dir} mqtt={self.config.mqtt!r} s3={self.config.s3!r}"
            f" bucket={self.config.bucket}"
        )

    def _warn_if_readable_by_others(self, path: Path) -> None:
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            self.get_logger().warning(f"secret file {path} is readable by other users: chmod 600 it")

    def status(self) -> dict:
        counters = asdict(self.uplink.counters)
        counters["mqtt_connected"] = self.uplink.connected
        counters["robot_id"] = self.config.robot_id
        return counters

    def _publish_status(self) -> None:
        self.status_pub.publish(String(data=json.dumps(self.status())))

    def shutdown(self) -> None:
        self.uplink.close()


def main(args: list[str] | None = None) -> None:
    run_node(UplinkNode, lambda node: node.shutdown(), args, config_errors=(ValueError,))


if __name__ == "__main__":
    main()
