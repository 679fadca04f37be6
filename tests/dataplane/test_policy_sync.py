"""Publish -> robot policy sync over real mosquitto + SeaweedFS + onnxruntime.

A published artifact is downloaded, verified, validated on its reference I/O and reported ready
(ROS-free library here; the ROS node has its own test); the controller's swap clears pending;
a signed rollback order moves the robot to an older version; a per-robot pin overrides the
fleet order until it is cleared.
"""

from __future__ import annotations

import statistics
import time

import pytest
from helpers.policy_artifacts import (
    build_tiny_artifact,
    clear_policy_plane,
    make_publisher,
    make_sync,
    ready_with,
    wait_until,
)

from lwd_protocol.announce import RobotPolicyStatus
from lwd_protocol.manifest import PolicyManifest
from lwd_protocol.signing import generate_private_key, trusted_keys, verify_manifest
from lwd_protocol.store import MANIFEST_NAME


@pytest.fixture(scope="module")
def admin_key():
    return generate_private_key()


@pytest.fixture
def plane(mqtt_broker, s3_store):
    clear_policy_plane(mqtt_broker, s3_store)
    yield
    clear_policy_plane(mqtt_broker, s3_store)


def test_publish_is_downloaded_verified_validated_and_ready(plane, mqtt_broker, s3_store, tmp_path, admin_key):
    trusted = trusted_keys([admin_key.public_key()])
    ready_at: dict[int, float] = {}

    def on_status(s: RobotPolicyStatus) -> None:
        if s.state == "ready" and s.pending_version:
            ready_at.setdefault(s.pending_version, time.monotonic())

    sync = make_sync(mqtt_broker, s3_store, "robot_01", tmp_path / "cache", trusted, on_status=on_status).start()
    latencies = []
    try:
        assert sync.connected.wait(10), "policy sync never connected"
        with make_publisher(mqtt_broker, s3_store, admin_key) as pub:
            for version in (1, 2, 3):
                build_tiny_artifact(tmp_path / f"a{version}", version, version - 1)  # unsigned: publish signs
                t0 = time.monotonic()
                ann = pub.publish(tmp_path / f"a{version}")
                assert ann.version == version and ann.kind == "publish"
                assert wait_until(ready_with(sync, version), 30), sync.history()[-3:]
                latencies.append(ready_at[version] - t0)
                if version == 1:
                    cached = tmp_path / "cache" / "v000001"
                    manifest = PolicyManifest.from_json((cached / MANIFEST_NAME).read_bytes())
                    manifest.verify_files(cached)
                    assert verify_manifest(manifest, trusted)
                    # the controller swaps it in at an episode boundary and says so
                    sync.note_active(1, "onnxruntime-cpu")
                    s = sync.status()
                    assert (s.state, s.active_version, s.pending_version) == ("idle", 1, 0)
            mirrored: list[RobotPolicyStatus] = []

            def mirrored_ready() -> bool:  # the MQTT status is published asynchronously: poll the retained copy
                status = pub.robot_statuses().get("robot_01")
                mirrored.append(status)
                return isinstance(status, RobotPolicyStatus) and status.pending_version == 3

            assert wait_until(mirrored_ready, 10), mirrored[-1]
        last = mirrored[-1]
        assert (last.state, last.active_version, last.engine_backend) == ("ready", 1, "onnxruntime-cpu")
        seen = [h.state for h in sync.history()]
        assert {"downloading", "building", "validating", "ready"} <= set(seen)
        timing = sync.timings[-1]
        assert timing.version == 3 and timing.reference_error <= 1e-4
    finally:
        sync.stop()
    ms = lambda xs: ", ".join(f"{x * 1000:.0f}" for x in xs)  # noqa: E731
    print(
        f"\npublish call -> ready [ms]: {ms(latencies)} (median {statistics.median(latencies) * 1000:.0f}); "
        f"robot receive -> ready: {ms(t.receive_to_ready_s for t in sync.timings)}"
    )


def test_signed_rollback_order_moves_robot_to_older_version(plane, mqtt_broker, s3_store, tmp_path, admin_key):
    trusted = trusted_keys([admin_key.public_key()])
    sync = make_sync(mqtt_broker, s3_store, "robot_01", tmp_path / "cache", trusted).start()
    try:
        with make_publisher(mqtt_broker, s3_store, admin_key) as pub:
            for version in (1, 2):
                build_tiny_artifact(tmp_path / f"a{version}", version, version - 1)
                pub.publish(tmp_path / f"a{version}")
                assert wait_until(ready_with(sync, version), 30), sync.history()[-3:]
            sync.note_active(2)
            order = pub.rollback(1, note="v2 drops cups")
            assert order.kind == "rollback" and order.version == 1 and order.note == "v2 drops cups"
            assert wait_until(ready_with(sync, 1), 30), sync.history()[-3:]
        s = sync.status()
        assert (s.active_version, s.pending_version, s.rejected_version) == (2, 1, 0)
        assert sync.state.current_version == 1
    finally:
        sync.stop()


def test_robot_pin_overrides_fleet_until_cleared(plane, mqtt_broker, s3_store, tmp_path, admin_key):
    trusted = trusted_keys([admin_key.public_key()])
    r1 = make_sync(mqtt_broker, s3_store, "robot_01", tmp_path / "c1", trusted).start()
    r2 = make_sync(mqtt_broker, s3_store, "robot_02", tmp_path / "c2", trusted).start()
    try:
        with make_publisher(mqtt_broker, s3_store, admin_key) as pub:
            build_tiny_artifact(tmp_path / "a1", 1)
            build_tiny_artifact(tmp_path / "a2", 2, 1)
            pub.publish(tmp_path / "a1")
            assert wait_until(ready_with(r1, 1), 30) and wait_until(ready_with(r2, 1), 30)
            pin = pub.publish(tmp_path / "a2", robot="robot_01")  # canary: only robot_01 gets v2
            assert pin.target == "robot_01"
            assert wait_until(ready_with(r1, 2), 30), r1.history()[-3:]
            time.sleep(0.5)
            assert r2.status().pending_version == 1  # robot_02 never sees robot_01's pin
            pub.rollback(1, robot="robot_01")  # pinned back, while the fleet order stays v1
            assert wait_until(ready_with(r1, 1), 30), r1.history()[-3:]
            pub.announce("publish", *_stored(pub, 2))  # fleet moves to v2 ...
            assert wait_until(ready_with(r2, 2), 30), r2.history()[-3:]
            time.sleep(0.5)
            assert r1.status().pending_version == 1  # ... but robot_01's pin still wins
            pub.unpin("robot_01")
            assert wait_until(ready_with(r1, 2), 30), r1.history()[-3:]
    finally:
        r1.stop()
        r2.stop()


def _stored(pub, version: int):
    manifest, digest = pub.read_manifest(version)
    return manifest, digest
