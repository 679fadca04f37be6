"""Signed policies (issue 8, point 2): every bad artifact or order is refused, with the reason, and the
robot keeps the policy it had.

Each case starts from a robot that prepared a good, signed v1 (real mosquitto, SeaweedFS and
onnxruntime), then an attacker -- or a mistaken admin -- does one thing: tampers with a file or the
manifest in the store, ships an unsigned or wrongly signed manifest, signs an order with a key the
robot does not trust, edits a signed order, ships a graph that does not match its manifest or the
robot, ships reference outputs the engine does not reproduce, replays an old order, orders an
older version without a rollback, or replays another robot's pin. The robot must report the
refusal with a reason naming the problem and keep v1 (or v2) pending, with no folder for the bad
version in its cache.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.policy_artifacts import (
    build_tiny_artifact,
    clear_policy_plane,
    make_publisher,
    make_sync,
    mqtt_ep,
    ready_with,
    rejected,
    wait_until,
)

from lwd_fleet.policy_sync import PolicySync
from lwd_learner.publish import PolicyPublisher
from lwd_protocol.announce import PolicyAnnouncement, utc_timestamp
from lwd_protocol.names import MqttTopics
from lwd_protocol.signing import generate_private_key, sign_announcement, trusted_keys
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME, POLICIES_BUCKET, policy_key
from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt


@dataclass
class Ctx:
    pub: PolicyPublisher
    tmp: Path
    admin_key: object
    rogue_key: object
    broker: object
    store: object
    sync: PolicySync
    first_order: PolicyAnnouncement
    expect_ready: int = 1  # the version the robot must still offer after the refusal

    def retain_raw(self, topic: str, payload: bytes) -> None:
        ep = mqtt_ep(self.broker, "admin")
        client = connect_mqtt(make_mqtt_client(ep), ep)
        try:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        finally:
            stop_mqtt(client)

    def s3(self):
        return self.store.client("admin")

    def move_to_v2(self) -> None:
        build_tiny_artifact(self.tmp / "a2", 2, 1)
        self.pub.publish(self.tmp / "a2")
        assert wait_until(ready_with(self.sync, 2), 30), self.sync.history()[-3:]
        self.expect_ready = 2


def _tampered_file(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1)
    up = c.pub.upload(c.tmp / "a2")
    data = bytearray((c.tmp / "a2" / MODEL_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    c.s3().put_object(POLICIES_BUCKET, policy_key(2, MODEL_NAME), _bio(bytes(data)), len(data))
    c.pub.announce("publish", up.manifest, up.manifest_sha256)
    return 2


def _truncated_file(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1)
    up = c.pub.upload(c.tmp / "a2")
    data = (c.tmp / "a2" / MODEL_NAME).read_bytes()[:-100]  # the store serves fewer bytes than signed
    c.s3().put_object(POLICIES_BUCKET, policy_key(2, MODEL_NAME), _bio(data), len(data))
    c.pub.announce("publish", up.manifest, up.manifest_sha256)
    return 2


def _tampered_manifest(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1)
    up = c.pub.upload(c.tmp / "a2")
    doc = json.loads(up.manifest.to_json())
    doc["reference_atol"] = 10.0  # loosen validation after signing
    raw = json.dumps(doc).encode()
    c.s3().put_object(POLICIES_BUCKET, policy_key(2, MANIFEST_NAME), _bio(raw), len(raw))
    c.pub.announce("publish", up.manifest, up.manifest_sha256)
    return 2


def _unsigned_manifest(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1)  # no key: unsigned
    up = c.pub.upload(c.tmp / "a2", sign=False)
    assert up.manifest.signature is None
    c.pub.announce("publish", up.manifest, up.manifest_sha256)  # the order itself is properly signed
    return 2


def _manifest_signed_by_untrusted_key(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1, key=c.rogue_key)
    up = c.pub.upload(c.tmp / "a2", sign=False)
    c.pub.announce("publish", up.manifest, up.manifest_sha256)
    return 2


def _order_signed_by_untrusted_key(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1)
    rogue = PolicyPublisher(c.pub.config, c.rogue_key)  # stolen admin credentials, but not the admin key
    try:
        rogue.publish(c.tmp / "a2")
    finally:
        rogue.close()
    return 2


def _order_edited_after_signing(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1)
    up = c.pub.upload(c.tmp / "a2")
    order = c.pub.announce("publish", up.manifest, up.manifest_sha256, robot="robot_02")
    forged = dataclasses.replace(order, target="fleet", seq=order.seq + 1)  # keeps robot_02's signature
    c.retain_raw(MqttTopics.policy_fleet(), forged.to_json())
    return 2


def _graph_does_not_match_manifest(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1, graph_horizon=20)  # manifest says H=30, graph computes H=20
    c.pub.publish(c.tmp / "a2")
    return 2


def _horizon_does_not_match_robot(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1, horizon=20)  # consistent artifact, but the robot runs H=30
    c.pub.publish(c.tmp / "a2")
    return 2


def _engine_misses_reference(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1, reference_shift=1e-2)  # atol 1e-4
    c.pub.publish(c.tmp / "a2")
    return 2


def _replayed_old_order(c: Ctx) -> int:
    c.move_to_v2()
    c.retain_raw(MqttTopics.policy_fleet(), c.first_order.to_json())  # the captured, validly signed v1 order
    return 1


def _publish_order_for_older_version(c: Ctx) -> int:
    c.move_to_v2()
    order = PolicyAnnouncement(
        kind="publish",
        version=1,
        parent_version=0,
        manifest_sha256=c.first_order.manifest_sha256,
        created_at=utc_timestamp(),
        issued_by="admin",
        target="fleet",
        seq=c.first_order.seq + 10**6,  # fresh and properly signed, but "publish" may not lower the version
    )
    c.retain_raw(MqttTopics.policy_fleet(), sign_announcement(order, c.admin_key).to_json())
    return 1


def _pin_replayed_after_unpin(c: Ctx) -> int:
    c.move_to_v2()
    pin = c.pub.rollback(1, robot="robot_01")  # an admin pins robot_01 back to v1 ...
    assert wait_until(ready_with(c.sync, 1), 30), c.sync.history()[-3:]
    c.pub.unpin("robot_01")  # ... and later releases it: the robot follows the fleet's v2 again
    assert wait_until(ready_with(c.sync, 2), 30), c.sync.history()[-3:]
    c.retain_raw(MqttTopics.policy_robot("robot_01"), pin.to_json())  # the captured pin, replayed
    return 1


def _old_fleet_order_replayed_while_pinned(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1)
    build_tiny_artifact(c.tmp / "a3", 3, 2)
    c.pub.publish(c.tmp / "a2", robot="robot_01")  # canary pin on v2
    assert wait_until(ready_with(c.sync, 2), 30), c.sync.history()[-3:]
    c.pub.publish(c.tmp / "a3")  # the fleet moves to v3; robot_01 sees it but stays pinned
    c.retain_raw(MqttTopics.policy_fleet(), c.first_order.to_json())  # attacker puts the old v1 order back
    c.pub.unpin("robot_01")
    c.expect_ready = 2
    return 1


def _other_robots_pin(c: Ctx) -> int:
    build_tiny_artifact(c.tmp / "a2", 2, 1)
    order = c.pub.publish(c.tmp / "a2", robot="robot_02")
    c.retain_raw(MqttTopics.policy_robot("robot_01"), order.to_json())
    return 2


def _bio(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


# case -> (attack, expected reason pattern)
CASES: dict[str, tuple[Callable[[Ctx], int], str]] = {
    "tampered-file": (_tampered_file, r"policy\.onnx.*sha256 mismatch"),
    "truncated-file": (_truncated_file, r"policy\.onnx is \d+ bytes, its manifest records \d+"),
    "tampered-manifest": (_tampered_manifest, r"the signed order says"),
    "unsigned-manifest": (_unsigned_manifest, r"manifest v2 refused: it is unsigned"),
    "manifest-wrong-key": (_manifest_signed_by_untrusted_key, r"manifest v2 refused: it is signed by unknown key id"),
    "order-wrong-key": (_order_signed_by_untrusted_key, r"publish order for v2 refused: it is signed by unknown key"),
    "order-edited": (_order_edited_after_signing, r"signature does not verify"),
    "graph-shape-mismatch": (_graph_does_not_match_manifest, r"noise"),
    "horizon-mismatch": (_horizon_does_not_match_robot, r"action horizon 20 does not match the controller's 30"),
    "reference-mismatch": (_engine_misses_reference, r"reference.*differs by 0\.01"),
    "replayed-old-order": (
        _replayed_old_order,
        r"replayed order refused: seq \d+ is older than the last fleet order seen",
    ),
    "publish-older-version": (
        _publish_order_for_older_version,
        r"version rollback refused.*v1 is below the current v2",
    ),
    "pin-replayed-after-unpin": (
        _pin_replayed_after_unpin,
        r"replayed order refused: seq \d+ is the robot order that was withdrawn since",
    ),
    "old-fleet-order-replayed-while-pinned": (
        _old_fleet_order_replayed_while_pinned,
        r"replayed order refused: seq \d+ is older than the last fleet order seen",
    ),
    "other-robots-pin": (_other_robots_pin, r"order targets 'robot_02' but arrived on robot_01's robot topic"),
}


@pytest.fixture(scope="module")
def keys():
    return generate_private_key(), generate_private_key()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_artifact_or_order_is_refused_and_current_policy_kept(case, mqtt_broker, s3_store, tmp_path, keys):
    attack, reason = CASES[case]
    admin_key, rogue_key = keys
    clear_policy_plane(mqtt_broker, s3_store)
    sync = make_sync(mqtt_broker, s3_store, "robot_01", tmp_path / "cache", trusted_keys([admin_key.public_key()]))
    sync.start()
    try:
        with make_publisher(mqtt_broker, s3_store, admin_key) as pub:
            build_tiny_artifact(tmp_path / "a1", 1, key=admin_key)
            first = pub.publish(tmp_path / "a1")
            assert wait_until(ready_with(sync, 1), 30), sync.history()[-3:]
            ctx = Ctx(pub, tmp_path, admin_key, rogue_key, mqtt_broker, s3_store, sync, first)
            bad_version = attack(ctx)
            assert wait_until(rejected(sync, bad_version), 30), sync.history()[-3:]
        status = sync.status()
        print(f"\n{case}: refused v{status.rejected_version}: {status.rejected_reason}")
        assert status.rejected_version == bad_version
        assert re.search(reason, status.rejected_reason), status.rejected_reason
        assert any(h.state == "rejected" and re.search(reason, h.message) for h in sync.history())
        # the robot keeps what it had: still pending/ready, nothing installed for the bad version
        assert (status.state, status.pending_version) == ("ready", ctx.expect_ready)
        assert sync.state.current_version == ctx.expect_ready
        if bad_version != 1:
            assert not (tmp_path / "cache" / f"v{bad_version:06d}").exists()
        assert not list((tmp_path / "cache").glob(".tmp-*"))
    finally:
        sync.stop()
        clear_policy_plane(mqtt_broker, s3_store)
