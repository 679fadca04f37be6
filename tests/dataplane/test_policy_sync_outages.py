"""Policy sync survives its services being away: a broker that starts after the robot, a store that
is down when the order arrives, and a robot restart while the broker is down (it re-verifies its
cached version and offers it again, without the network)."""

from __future__ import annotations

import pytest
from helpers.policy_artifacts import (
    ROBOTS,
    build_tiny_artifact,
    clear_policy_plane,
    make_publisher,
    make_sync,
    ready_with,
    wait_until,
)

from lwd_learner.localstack import MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3, free_tcp_port
from lwd_protocol.signing import generate_private_key, trusted_keys
from lwd_protocol.store import POLICIES_BUCKET


@pytest.fixture
def own_broker(tmp_path):
    """A broker of our own (not started): this test stops and starts it."""
    identities = [MqttIdentity.generate("admin", "admin"), *(MqttIdentity.generate(r, "robot") for r in ROBOTS)]
    broker = MosquittoBroker(tmp_path / "mosquitto", identities, port=free_tcp_port())
    try:
        yield broker
    finally:
        broker.stop()


def test_robot_started_before_the_broker_still_syncs(own_broker, s3_store, tmp_path):
    key = generate_private_key()
    clear_policy_plane_store_only(s3_store)
    sync = make_sync(own_broker, s3_store, "robot_01", tmp_path / "cache", trusted_keys([key.public_key()])).start()
    try:
        assert not sync.connected.wait(1.5)  # nothing listening yet; the sync keeps trying in the background
        own_broker.start()
        assert sync.connected.wait(15), "policy sync did not connect once the broker came up"
        build_tiny_artifact(tmp_path / "a1", 1)
        with make_publisher(own_broker, s3_store, key) as pub:
            pub.publish(tmp_path / "a1")
        assert wait_until(ready_with(sync, 1), 30), sync.history()[-3:]
    finally:
        sync.stop()
        clear_policy_plane_store_only(s3_store)


def test_restart_while_broker_down_reoffers_cached_version(s3_store, own_broker, tmp_path):
    key = generate_private_key()
    trusted = trusted_keys([key.public_key()])
    clear_policy_plane_store_only(s3_store)
    own_broker.start()
    try:
        sync = make_sync(own_broker, s3_store, "robot_01", tmp_path / "cache", trusted).start()
        build_tiny_artifact(tmp_path / "a1", 1)
        with make_publisher(own_broker, s3_store, key) as pub:
            pub.publish(tmp_path / "a1")
        assert wait_until(ready_with(sync, 1), 30), sync.history()[-3:]
        sync.stop()
        own_broker.stop()
        # reboot with the broker down: the cached v1 is re-verified (signature, files, engine) and offered
        again = make_sync(own_broker, s3_store, "robot_01", tmp_path / "cache", trusted).start()
        try:
            assert wait_until(ready_with(again, 1), 30), again.history()[-3:]
            assert not again.connected.is_set()
            assert any("re-verified" in h.message for h in again.history())
            own_broker.restart()  # the retained order comes back: same order, nothing to download again
            assert again.connected.wait(15)
            assert wait_until(lambda: any("already prepared" in h.message for h in again.history()), 10)
            assert not any(h.state == "downloading" for h in again.history())
        finally:
            again.stop()
        # a tampered cache is not offered after a restart
        model = tmp_path / "cache" / "v000001" / "policy.onnx"
        model.write_bytes(model.read_bytes()[:-1] + b"\0")
        own_broker.stop()
        third = make_sync(own_broker, s3_store, "robot_01", tmp_path / "cache", trusted).start()
        try:
            assert wait_until(lambda: third.status().rejected_version == 1, 30), third.history()[-3:]
            assert "cached v1 failed re-verification" in third.status().rejected_reason
            assert third.status().pending_version == 0 and not (tmp_path / "cache" / "v000001").exists()
        finally:
            third.stop()
    finally:
        clear_policy_plane_store_only(s3_store)


def test_store_down_when_order_arrives_is_retried(mqtt_broker, tmp_path):
    key = generate_private_key()
    admin = S3Identity.generate("admin", ("Admin", "Read", "List", "Write"))
    robot = S3Identity.generate("robot_01", (f"Read:{POLICIES_BUCKET}", f"List:{POLICIES_BUCKET}"))
    store = SeaweedS3(tmp_path / "weed", [admin, robot]).start()
    clear_policy_plane(mqtt_broker, store)
    sync = make_sync(mqtt_broker, store, "robot_01", tmp_path / "cache", trusted_keys([key.public_key()])).start()
    try:
        build_tiny_artifact(tmp_path / "a1", 1)
        with make_publisher(mqtt_broker, store, key) as pub:
            upload = pub.upload(tmp_path / "a1")
            store.stop()
            pub.announce("publish", upload.manifest, upload.manifest_sha256)
            assert wait_until(lambda: "retry" in sync.status().message, 20), sync.history()[-3:]
            assert sync.status().state == "downloading" and sync.status().rejected_version == 0
            store.restart()
            assert wait_until(ready_with(sync, 1), 30), sync.history()[-3:]
    finally:
        sync.stop()
        clear_policy_plane(mqtt_broker, store)
        store.stop()


def clear_policy_plane_store_only(store) -> None:
    s3 = store.client("admin")
    for obj in s3.list_objects(POLICIES_BUCKET, recursive=True):
        s3.remove_object(POLICIES_BUCKET, obj.object_name)
