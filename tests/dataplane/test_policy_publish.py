"""PolicyPublisher against real SeaweedFS + mosquitto: upload order, immutability, retained signed orders."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest
from helpers.policy_artifacts import build_tiny_artifact, clear_policy_plane, make_publisher

from lwd_learner.publish import PolicyPublisher, PublishError
from lwd_protocol.announce import PolicyAnnouncement
from lwd_protocol.manifest import ManifestError, PolicyManifest
from lwd_protocol.names import MqttTopics
from lwd_protocol.signing import generate_private_key, key_id, trusted_keys, verify_announcement, verify_manifest
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME, POLICIES_BUCKET, REFERENCE_IO_NAME, policy_key


@pytest.fixture
def pub(mqtt_broker, s3_store):
    clear_policy_plane(mqtt_broker, s3_store)
    key = generate_private_key()
    with make_publisher(mqtt_broker, s3_store, key) as publisher:
        yield publisher
    clear_policy_plane(mqtt_broker, s3_store)


def _stored(store, version: int, name: str) -> bytes:
    response = store.client("admin").get_object(POLICIES_BUCKET, policy_key(version, name))
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def test_upload_signs_stores_every_file_and_is_idempotent(pub: PolicyPublisher, s3_store, tmp_path):
    build_tiny_artifact(tmp_path / "a1", 1)
    result = pub.upload(tmp_path / "a1")
    assert result.uploaded == tuple(policy_key(1, n) for n in (MODEL_NAME, REFERENCE_IO_NAME, MANIFEST_NAME))
    for name in (MODEL_NAME, REFERENCE_IO_NAME):
        assert _stored(s3_store, 1, name) == (tmp_path / "a1" / name).read_bytes()
    raw = _stored(s3_store, 1, MANIFEST_NAME)
    assert hashlib.sha256(raw).hexdigest() == result.manifest_sha256
    stored = PolicyManifest.from_json(raw)
    assert verify_manifest(stored, trusted_keys([pub.signing_key.public_key()])) == key_id(pub.signing_key)
    stat = s3_store.client("admin").stat_object(POLICIES_BUCKET, policy_key(1, MODEL_NAME))
    assert stat.metadata.get("x-amz-meta-sha256") == stored.files[MODEL_NAME].sha256
    again = pub.upload(tmp_path / "a1")  # same bytes (Ed25519 signatures are deterministic)
    assert again.already_present and again.manifest_sha256 == result.manifest_sha256


def test_a_version_is_never_overwritten_with_different_content(pub: PolicyPublisher, s3_store, tmp_path):
    build_tiny_artifact(tmp_path / "a1", 1)
    first = pub.upload(tmp_path / "a1")
    build_tiny_artifact(tmp_path / "other", 1, training_snapshot=99)  # different artifact, same version
    with pytest.raises(PublishError, match=r"v000001 already exists .* export this policy as v000002"):
        pub.upload(tmp_path / "other")
    assert hashlib.sha256(_stored(s3_store, 1, MANIFEST_NAME)).hexdigest() == first.manifest_sha256


def test_racing_publisher_loses_at_the_conditional_manifest_write(
    pub: PolicyPublisher, s3_store, tmp_path, monkeypatch
):
    build_tiny_artifact(tmp_path / "mine", 3)
    build_tiny_artifact(tmp_path / "theirs", 3, training_snapshot=5)
    theirs = json.dumps({"stand-in": "another publisher's manifest"}).encode()
    real_get = pub._get_optional

    def check_then_race(key: str, limit: int):
        found = real_get(key, limit)
        if key == policy_key(3, MANIFEST_NAME) and found is None:  # the other publisher commits right now
            s3_store.client("admin").put_object(POLICIES_BUCKET, key, io.BytesIO(theirs), len(theirs))
        return found

    monkeypatch.setattr(pub, "_get_optional", check_then_race)
    with pytest.raises(PublishError, match="already exists"):
        pub.upload(tmp_path / "mine")
    assert _stored(s3_store, 3, MANIFEST_NAME) == theirs  # the winner's manifest stands


def test_publish_retains_a_signed_order_and_seq_increases(pub: PolicyPublisher, mqtt_broker, tmp_path):
    trusted = trusted_keys([pub.signing_key.public_key()])
    orders = []
    for version in (1, 2):
        build_tiny_artifact(tmp_path / f"a{version}", version, version - 1)
        orders.append(pub.publish(tmp_path / f"a{version}", note=f"v{version}"))
    retained = pub.retained(MqttTopics.policy_fleet())
    order = PolicyAnnouncement.from_json(retained[MqttTopics.policy_fleet()])
    assert order == orders[-1] and verify_announcement(order, trusted) == key_id(pub.signing_key)
    assert (order.kind, order.version, order.parent_version, order.issued_by) == ("publish", 2, 1, "admin")
    assert orders[1].seq > orders[0].seq
    manifest, digest = pub.read_manifest(2)
    assert digest == order.manifest_sha256 and manifest.version == 2
    with pytest.raises(PublishError, match="issue `lwd admin rollback` instead"):
        pub.publish(tmp_path / "a1")  # a publish may not lower the version
    back = pub.rollback(1, note="regression")
    assert (back.kind, back.version) == ("rollback", 1) and back.seq > orders[1].seq
    pub.unpin("robot_01")  # harmless when there is no pin
    assert MqttTopics.policy_robot("robot_01") not in pub.retained(MqttTopics.all_policy())


def test_refusals_before_anything_is_uploaded(pub: PolicyPublisher, s3_store, tmp_path):
    build_tiny_artifact(tmp_path / "a1", 1)
    (tmp_path / "a1" / MODEL_NAME).write_bytes(b"changed after export")
    with pytest.raises(ManifestError, match=r"policy\.onnx"):
        pub.upload(tmp_path / "a1")
    build_tiny_artifact(tmp_path / "a2", 2)
    unsigned_publisher = PolicyPublisher(pub.config, None)
    with pytest.raises(PublishError, match="robots refuse unsigned policies"):
        unsigned_publisher.upload(tmp_path / "a2")
    with pytest.raises(PublishError, match="not in lwd-policies"):
        pub.rollback(7)
    assert not list(s3_store.client("admin").list_objects(POLICIES_BUCKET, recursive=True))


def test_list_versions_reports_lineage_eval_and_incomplete_uploads(pub: PolicyPublisher, s3_store, tmp_path):
    build_tiny_artifact(tmp_path / "a1", 1, training_snapshot=3)
    build_tiny_artifact(tmp_path / "a2", 2, 1, training_snapshot=8, notes=json.dumps({"eval": {"success_rate": 0.9}}))
    pub.upload(tmp_path / "a1")
    pub.upload(tmp_path / "a2")
    data = (tmp_path / "a1" / MODEL_NAME).read_bytes()
    s3_store.client("admin").put_object(POLICIES_BUCKET, policy_key(5, MODEL_NAME), io.BytesIO(data), len(data))
    infos = {v.version: v for v in pub.list_versions()}
    assert sorted(infos) == [1, 2, 5]
    assert (infos[1].training_snapshot, infos[1].parent_version, infos[1].evaluation) == (3, 0, None)
    assert (infos[2].training_snapshot, infos[2].parent_version) == (8, 1)
    assert infos[2].evaluation == {"success_rate": 0.9}
    assert infos[2].key_id == key_id(pub.signing_key) and infos[2].size_bytes > len(data)
    assert not infos[5].complete and "incomplete upload" in infos[5].problem
    assert pub.next_free_version() == 6


def test_standing_order_view_follows_other_admins_and_is_rebuilt_after_a_reconnect(mqtt_broker, s3_store, tmp_path):
    """Announces read the orders from a standing subscription: it must see another publisher's orders, and a
    dropped connection (which loses a clean session's subscriptions) must not leave it stale."""
    from helpers.policy_artifacts import mqtt_ep, s3_ep

    from lwd_learner.publish import PublisherConfig
    from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt

    clear_policy_plane(mqtt_broker, s3_store)
    key = generate_private_key()
    mine = PublisherConfig(s3=s3_ep(s3_store, "admin"), mqtt=mqtt_ep(mqtt_broker, "admin", "view-test"), issued_by="a")
    for version in (1, 2, 3):
        build_tiny_artifact(tmp_path / f"a{version}", version, version - 1)

    def fleet_version(pub: PolicyPublisher) -> int | None:
        order = pub.current_orders().get("fleet")
        return None if order is None else order.version

    def wait_for(pub: PolicyPublisher, version: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and fleet_version(pub) != version:
            time.sleep(0.05)
        return fleet_version(pub) == version

    try:
        with PolicyPublisher(mine, key) as pub, make_publisher(mqtt_broker, s3_store, key, "b") as other:
            pub.prepare()
            assert fleet_version(pub) is None
            other.publish(tmp_path / "a2")
            assert wait_for(pub, 2), "the standing view never saw the other admin's order"
            with pytest.raises(PublishError, match="older than v2"):
                pub.publish(tmp_path / "a1")
            kicker_ep = mqtt_ep(mqtt_broker, "admin", "view-test")  # same client id: the broker drops `pub`
            stop_mqtt(connect_mqtt(make_mqtt_client(kicker_ep), kicker_ep))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (pub._mqtt.is_connected() and pub._reader._views == {}):
                time.sleep(0.05)
            other.publish(tmp_path / "a3")
            assert wait_for(pub, 3), "the view went stale after the reconnect"
    finally:
        clear_policy_plane(mqtt_broker, s3_store)
