"""Least privilege, proved against the real broker and store: every forbidden action is refused.

A stolen robot credential must not publish policies, commit snapshots, speak for another robot,
read other robots' data, or write outside its own object-store prefix.
"""

from __future__ import annotations

import io
import queue
import threading
import uuid

import pytest
from minio.error import S3Error

from lwd_protocol.names import MqttTopics
from lwd_protocol.store import EPISODES_BUCKET, OFFLINE_BUCKET, POLICIES_BUCKET, episode_key, policy_key
from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt


def _connected(broker, user: str):
    ep = broker.endpoint(user, client_id=f"{user}-{uuid.uuid4().hex[:8]}")
    return connect_mqtt(make_mqtt_client(ep), ep)


def _watch(broker, topic: str):
    """An admin subscriber on `topic`; returns (client, queue of received topics)."""
    client = _connected(broker, "admin")
    got: queue.Queue = queue.Queue()
    # live messages only: retained ones (e.g. other tests' snapshot pointer on the shared broker) are history
    client.on_message = lambda c, u, msg: None if msg.retain else got.put((msg.topic, msg.payload))
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.subscribe(topic, qos=1)
    assert done.wait(5)
    return client, got


FORBIDDEN_ROBOT_PUBLISHES = [
    ("fleet policy", MqttTopics.policy_fleet()),
    ("another robot's policy pin", MqttTopics.policy_robot("robot_02")),
    ("snapshot pointer", MqttTopics.snapshots()),
    ("another robot's episodes", MqttTopics.episodes("robot_02")),
    ("another robot's status", MqttTopics.robot_status("robot_02")),
]


@pytest.mark.parametrize(("what", "topic"), FORBIDDEN_ROBOT_PUBLISHES, ids=[w for w, _ in FORBIDDEN_ROBOT_PUBLISHES])
def test_robot_cannot_publish_outside_its_subtree(mqtt_broker, what, topic):
    watcher, got = _watch(mqtt_broker, f"{MqttTopics.ROOT}/#")
    robot = _connected(mqtt_broker, "robot_01")
    try:
        robot.publish(topic, b'{"forged": true}', qos=1, retain=True).wait_for_publish(5)
        # A message the robot IS allowed to send, published after: once it arrives, the forged one had its chance.
        marker = MqttTopics.robot_status("robot_01")
        robot.publish(marker, b"marker", qos=1).wait_for_publish(5)
        seen = []
        while True:
            t, _ = got.get(timeout=5)
            seen.append(t)
            if t == marker:
                break
        assert topic not in seen, f"broker delivered robot_01's forged {what} message"
    finally:
        stop_mqtt(robot)
        stop_mqtt(watcher)


def test_robot_cannot_eavesdrop_on_another_robot(mqtt_broker):
    spy = _connected(mqtt_broker, "robot_01")
    got: queue.Queue = queue.Queue()
    spy.on_message = lambda c, u, msg: got.put(msg.topic)
    done = threading.Event()
    spy.on_subscribe = lambda *a: done.set()
    spy.subscribe(MqttTopics.episodes("robot_02"), qos=1)
    assert done.wait(5)
    victim = _connected(mqtt_broker, "robot_02")
    try:
        victim.publish(MqttTopics.episodes("robot_02"), b"{}", qos=1).wait_for_publish(5)
        with pytest.raises(queue.Empty):
            got.get(timeout=1.0)
    finally:
        stop_mqtt(victim)
        stop_mqtt(spy)


def test_learner_cannot_speak_for_a_robot(mqtt_broker):
    watcher, got = _watch(mqtt_broker, MqttTopics.all_episodes())
    learner = _connected(mqtt_broker, "learner")
    try:
        learner.publish(MqttTopics.episodes("robot_01"), b"{}", qos=1).wait_for_publish(5)
        with pytest.raises(queue.Empty):
            got.get(timeout=1.0)
    finally:
        stop_mqtt(learner)
        stop_mqtt(watcher)


def _put(client, bucket: str, key: str) -> None:
    client.put_object(bucket, key, io.BytesIO(b"payload"), 7)


def _refused(action) -> str:
    with pytest.raises(S3Error) as info:
        action()
    return info.value.code


def test_robot_writes_only_its_own_prefix(s3_store):
    robot = s3_store.client("robot_01")
    eid = uuid.uuid4().hex
    _put(robot, EPISODES_BUCKET, episode_key("robot_01", eid))  # allowed
    assert _refused(lambda: _put(robot, EPISODES_BUCKET, episode_key("robot_02", eid))) == "AccessDenied"
    assert _refused(lambda: _put(robot, EPISODES_BUCKET, f"robot_01x/{eid}.mcap")) == "AccessDenied"
    assert _refused(lambda: _put(robot, POLICIES_BUCKET, policy_key(1, "policy.onnx"))) == "AccessDenied"
    assert _refused(lambda: _put(robot, OFFLINE_BUCKET, f"demo/{eid}.mcap")) == "AccessDenied"


def test_robot_reads_no_episodes_and_cannot_delete(s3_store):
    admin, robot = s3_store.client("admin"), s3_store.client("robot_01")
    eid = uuid.uuid4().hex
    key = episode_key("robot_02", eid)
    _put(admin, EPISODES_BUCKET, key)
    assert _refused(lambda: robot.get_object(EPISODES_BUCKET, key).read()) == "AccessDenied"
    assert _refused(lambda: list(robot.list_objects(EPISODES_BUCKET, recursive=True))) == "AccessDenied"
    assert _refused(lambda: robot.remove_object(EPISODES_BUCKET, key)) == "AccessDenied"


def test_robot_reads_published_policies(s3_store):
    admin, robot = s3_store.client("admin"), s3_store.client("robot_01")
    key = policy_key(900 + uuid.uuid4().int % 1000, "manifest.json")
    _put(admin, POLICIES_BUCKET, key)
    assert robot.get_object(POLICIES_BUCKET, key).read() == b"payload"


def test_coordinator_and_learner_cannot_publish_as_each_other(s3_store):
    coordinator, learner = s3_store.client("coordinator"), s3_store.client("learner")
    assert _refused(lambda: _put(coordinator, POLICIES_BUCKET, policy_key(1, "policy.onnx"))) == "AccessDenied"
    assert _refused(lambda: _put(coordinator, EPISODES_BUCKET, episode_key("robot_01", "x1"))) == "AccessDenied"
    assert _refused(lambda: _put(learner, EPISODES_BUCKET, episode_key("robot_01", "x2"))) == "AccessDenied"
