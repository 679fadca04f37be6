"""The uplink node ships the spool through real mosquitto + SeaweedFS and reports its state on
uplink/status; missing credentials stop it with an error naming the file and the field."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lwd_protocol.episode import EpisodeEnd, EpisodeStart, Outcome, episode_filename, new_episode_id
from lwd_protocol.episode_io import EpisodeWriter
from lwd_protocol.names import MqttTopics
from lwd_protocol.robot_spec import ACTION_DIM
from lwd_protocol.store import EPISODES_BUCKET, episode_key

pytestmark = pytest.mark.ros
ROBOT = "robot_02"


def _episode(spool: Path) -> Path:
    spool.mkdir(parents=True, exist_ok=True)
    eid = new_episode_id(ROBOT)
    start = EpisodeStart(episode_id=eid, robot_id=ROBOT, task="freezer", instruction="close it", cameras=())
    w = EpisodeWriter(spool / episode_filename(eid), start)
    for t in range(5):
        w.write_joint_state(np.full(ACTION_DIM, t, np.float64), t, t)
        w.write_action(np.full(ACTION_DIM, t, np.float32), t, t, source=0, policy_version=1)
    return w.close(EpisodeEnd(outcome=Outcome.FAILURE, num_steps=5))


def _secrets(tmp_path: Path, broker, store) -> dict[str, str]:
    mq, s3 = broker.identity(ROBOT), store.identity(ROBOT)
    (tmp_path / "mqtt.secret").write_text(mq.password + "\n")
    (tmp_path / "s3.secret").write_text(s3.secret_key)
    for f in ("mqtt.secret", "s3.secret"):
        (tmp_path / f).chmod(0o600)
    return {
        "mqtt_username": mq.username,
        "mqtt_password_file": str(tmp_path / "mqtt.secret"),
        "s3_access_key": s3.access_key,
        "s3_secret_key_file": str(tmp_path / "s3.secret"),
    }


def _params(tmp_path: Path, broker, store, secrets: dict[str, str]) -> Path:
    params = {
        "robot_id": ROBOT,
        "spool_dir": str(tmp_path / "spool"),
        **secrets,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "s3_endpoint": store.endpoint,
        "s3_region": store.region,
        "poll_interval_s": 0.1,
        "status_period_s": 0.2,
    }
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump({"/**/uplink": {"ros__parameters": params}}))
    return path


def _start(env, params: Path, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "lwd_fleet.nodes.uplink_node", "--ros-args", "--params-file", str(params)]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_uplink_node_ships_the_spool_and_reports_status(ros_env, mqtt_broker, s3_store, tmp_path):
    import rclpy
    from std_msgs.msg import String

    from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt

    path = _episode(tmp_path / "spool")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    secrets = _secrets(tmp_path, mqtt_broker, s3_store)

    got: list[dict] = []
    arrived = threading.Event()
    coord = make_mqtt_client(mqtt_broker.endpoint("coordinator", client_id=f"probe-{time.monotonic_ns()}"))

    def on_message(client, userdata, msg):
        got.append(json.loads(msg.payload))
        arrived.set()

    coord.on_message = on_message
    connect_mqtt(coord, mqtt_broker.endpoint("coordinator"))
    coord.subscribe(MqttTopics.episodes(ROBOT), qos=1)

    rclpy.init()
    node = rclpy.create_node("uplink_probe")
    status: dict = {}
    node.create_subscription(String, "uplink/status", lambda m: status.update(json.loads(m.data)), 10)
    log = tmp_path / "uplink.log"
    proc = _start(ros_env, _params(tmp_path, mqtt_broker, s3_store, secrets), log)
    try:
        assert arrived.wait(60), f"no announcement; log: {log.read_text()}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and status.get("announced") != 1:
            rclpy.spin_once(node, timeout_sec=0.05)
        assert status["announced"] == 1 and status["uploaded"] == 1 and status["pending"] == 0, status
        assert status["mqtt_connected"] and status["robot_id"] == ROBOT and not status["spool_full"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        node.destroy_node()
        rclpy.shutdown()
        stop_mqtt(coord)
    assert proc.returncode == 0, log.read_text()
    (ann,) = got
    eid = path.name[: -len(".mcap")]
    assert ann["episode_id"] == eid and ann["sha256"] == digest and ann["outcome"] == "failure"
    obj = s3_store.client("admin").get_object(EPISODES_BUCKET, episode_key(ROBOT, eid))
    assert hashlib.sha256(obj.read()).hexdigest() == digest
    assert not path.exists()  # deleted after the PUBACK


def test_missing_credentials_stop_the_node_with_a_clear_error(ros_env, mqtt_broker, s3_store, tmp_path):
    secrets = _secrets(tmp_path, mqtt_broker, s3_store)
    log = tmp_path / "uplink.log"
    proc = _start(ros_env, _params(tmp_path, mqtt_broker, s3_store, {**secrets, "s3_secret_key_file": ""}), log)
    assert proc.wait(timeout=60) == 2
    assert "parameter s3_secret_key_file is required" in log.read_text()
    absent = str(tmp_path / "absent.secret")
    proc = _start(ros_env, _params(tmp_path, mqtt_broker, s3_store, {**secrets, "mqtt_password_file": absent}), log)
    assert proc.wait(timeout=60) == 2
    assert f"mqtt_password_file: {absent} does not exist" in log.read_text()
