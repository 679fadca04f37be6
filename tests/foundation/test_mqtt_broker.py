"""The mosquitto fixture is a real broker: auth, ACL and QoS 1 delivery are enforced by it."""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lwd_protocol.names import MqttTopics


def _client(broker, username: str | None, password: str | None = None, client_id: str = "") -> tuple[mqtt.Client, int]:
    """Connect and return (client, reason code value); 0 means accepted."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    connected = threading.Event()
    result: dict[str, int] = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        result["rc"] = reason_code.value
        connected.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    assert connected.wait(5), "broker did not answer CONNECT"
    return client, result["rc"]


def _creds(broker, name):
    ident = broker.identity(name)
    return ident.username, ident.password


def test_authenticated_publish_subscribe_qos1(mqtt_broker):
    sub, rc = _client(mqtt_broker, *_creds(mqtt_broker, "coordinator"), client_id="coord-smoke")
    assert rc == 0
    got: queue.Queue = queue.Queue()
    sub.on_message = lambda c, u, msg: got.put((msg.topic, msg.payload, msg.qos))
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(MqttTopics.all_episodes(), qos=1)
    assert subscribed.wait(5)

    pub, rc = _client(mqtt_broker, *_creds(mqtt_broker, "robot_01"), client_id="robot01-smoke")
    assert rc == 0
    info = pub.publish(MqttTopics.episodes("robot_01"), b'{"episode_id": "e1"}', qos=1)
    info.wait_for_publish(5)
    assert info.is_published()
    topic, payload, qos = got.get(timeout=5)
    assert topic == MqttTopics.episodes("robot_01")
    assert payload == b'{"episode_id": "e1"}'
    assert qos == 1
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()


@pytest.mark.parametrize("username,password", [(None, None), ("robot_01", "wrong-password"), ("nobody", "x")])
def test_unauthenticated_clients_are_refused(mqtt_broker, username, password):
    client, rc = _client(mqtt_broker, username, password)
    client.loop_stop()
    assert rc != 0, "broker accepted a client without valid credentials"


def test_acl_blocks_robot_publishing_as_another_robot(mqtt_broker):
    sub, _ = _client(mqtt_broker, *_creds(mqtt_broker, "coordinator"), client_id="coord-acl")
    got: queue.Queue = queue.Queue()
    sub.on_message = lambda c, u, msg: got.put(msg.topic)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(MqttTopics.all_episodes(), qos=1)
    assert subscribed.wait(5)

    pub, _ = _client(mqtt_broker, *_creds(mqtt_broker, "robot_01"), client_id="robot01-acl")
    # Forbidden: robot_01 impersonating robot_02, then a control message that robot_01 may send.
    pub.publish(MqttTopics.episodes("robot_02"), b"forged", qos=1).wait_for_publish(5)
    pub.publish(MqttTopics.episodes("robot_01"), b"allowed", qos=1).wait_for_publish(5)
    assert got.get(timeout=5) == MqttTopics.episodes("robot_01"), "forged message was delivered"
    assert got.empty()
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()
