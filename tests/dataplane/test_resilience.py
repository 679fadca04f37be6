"""Outages and restarts: nothing is lost while the broker, the store or the Coordinator is down.

Tests that stop a service use their own short-lived instance so the session fixtures stay up.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from helpers.dataplane import make_coordinator, make_uplink, uid, wait_until, write_episode

from lwd_fleet.uplink import SpoolFullError
from lwd_learner.coordinator import Coordinator, SqliteSnapshotStore
from lwd_learner.localstack import MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3
from lwd_protocol.store import EPISODES_BUCKET, POLICIES_BUCKET


@pytest.fixture
def own_store(tmp_path) -> Iterator[SeaweedS3]:
    store = SeaweedS3(
        tmp_path / "weed",
        [
            S3Identity.generate("admin", ("Admin", "Read", "List", "Write")),
            S3Identity.generate("robot_01", (f"Write:{EPISODES_BUCKET}", f"Read:{POLICIES_BUCKET}")),
        ],
    ).start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def own_broker(tmp_path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(
        tmp_path / "mosq",
        [MqttIdentity.generate("coordinator", "coordinator"), MqttIdentity.generate("robot_01", "robot")],
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


def _ids(paths) -> set[str]:
    return {p.name.removesuffix(".mcap") for p in paths}


def _committed(coord) -> set[str]:
    v = coord.current_version()
    return {e.episode_id for e in coord.get_snapshot(v)} if v else set()


def test_coordinator_restart_gets_events_published_while_down(mqtt_broker, s3_store, tmp_path):
    client_id, db = uid("coord-persist"), tmp_path / "coord.db"
    first = make_coordinator(mqtt_broker, s3_store, db, client_id).start()
    assert first.subscribed.wait(10)
    first.stop()  # persistent session: the broker queues what arrives from now on

    spool = tmp_path / "spool"
    paths = [write_episode(spool, "robot_01") for _ in range(2)]
    uplink = make_uplink(mqtt_broker, s3_store, "robot_01", spool)
    try:
        assert uplink.drain(20)
    finally:
        uplink.close()

    second = make_coordinator(mqtt_broker, s3_store, db, client_id).start()
    try:
        assert wait_until(lambda: _committed(second) == _ids(paths), 20), second.counters
        assert second.counters.received == 2
    finally:
        second.stop()


def test_uplink_keeps_episodes_while_store_is_down(mqtt_broker, own_store, tmp_path):
    spool = tmp_path / "spool"
    paths = [write_episode(spool, "robot_01") for _ in range(2)]
    own_store.stop()
    uplink = make_uplink(mqtt_broker, own_store, "robot_01", spool).start()  # background thread
    coord = make_coordinator(mqtt_broker, own_store, tmp_path / "coord.db", uid("coord-s3")).start()
    try:
        assert wait_until(lambda: uplink.counters.failures >= 2, 15), uplink.counters
        assert all(p.exists() for p in paths), "nothing leaves the spool while the store is down"
        assert uplink.counters.pending == 2 and uplink.counters.announced == 0
        assert uplink.counters.last_error
        own_store.restart()
        assert wait_until(lambda: uplink.counters.announced == 2, 30), uplink.counters
        assert not any(p.exists() for p in paths)
        assert wait_until(lambda: _committed(coord) == _ids(paths), 20), coord.counters
    finally:
        uplink.close()
        coord.stop()


def test_uplink_restart_resends_without_reupload_after_broker_outage(own_broker, s3_store, tmp_path):
    spool = tmp_path / "spool"
    paths = [write_episode(spool, "robot_01") for _ in range(2)]
    own_broker.stop()
    before = make_uplink(own_broker, s3_store, "robot_01", spool)
    try:
        assert not before.drain(1.0)  # uploads go through; announcements wait for the broker
        assert before.counters.uploaded == 2 and before.counters.announced == 0
        assert all(p.exists() for p in paths)
    finally:
        before.close()  # robot reboots

    own_broker.restart()
    coord = make_coordinator(own_broker, s3_store, tmp_path / "coord.db", uid("coord-mq")).start()
    assert coord.subscribed.wait(10)
    after = make_uplink(own_broker, s3_store, "robot_01", spool)
    try:
        assert after.drain(20)
        assert after.counters.uploaded == 0, "already-uploaded episodes are only re-announced"
        assert after.counters.announced == 2
        assert wait_until(lambda: _committed(coord) == _ids(paths), 20), coord.counters
    finally:
        after.close()
        coord.stop()


def test_spool_over_limit_is_refused_loudly(mqtt_broker, s3_store, tmp_path):
    spool = tmp_path / "spool"
    path = write_episode(spool, "robot_01")
    uplink = make_uplink(mqtt_broker, s3_store, "robot_01", spool, max_spool_bytes=path.stat().st_size // 2)
    try:
        assert not uplink.has_capacity()
        with pytest.raises(SpoolFullError, match="over its limit"):
            uplink.check_capacity()
        uplink.step()
        assert uplink.counters.spool_full
    finally:
        uplink.close()


def test_unreadable_spool_file_is_rejected_not_retried(mqtt_broker, s3_store, tmp_path):
    spool = tmp_path / "spool"
    (spool).mkdir()
    (spool / "robot_01-bad.mcap").write_bytes(b"definitely not mcap")
    uplink = make_uplink(mqtt_broker, s3_store, "robot_01", spool)
    try:
        assert uplink.drain(5)
        assert uplink.counters.rejected == 1 and uplink.counters.uploaded == 0
        assert (spool / "rejected" / "robot_01-bad.mcap").exists()
    finally:
        uplink.close()


class _DiskFullStore(SqliteSnapshotStore):
    """The real SQLite store with its episode insert failing, as on a full or read-only disk."""

    def add_episode(self, rec):
        raise sqlite3.OperationalError("database or disk is full")


def test_message_not_recorded_is_not_acked_and_comes_back(mqtt_broker, s3_store, tmp_path):
    client_id, db = uid("coord-ack"), tmp_path / "coord.db"
    cfg = make_coordinator(mqtt_broker, s3_store, db, client_id).config
    broken = Coordinator(cfg, store=_DiskFullStore(db)).start()
    assert broken.subscribed.wait(10)
    spool = tmp_path / "spool"
    paths = [write_episode(spool, "robot_01")]
    uplink = make_uplink(mqtt_broker, s3_store, "robot_01", spool)
    try:
        assert uplink.drain(20)
    finally:
        uplink.close()
    try:
        assert wait_until(lambda: broken.counters.transient_errors >= 2, 15), broken.counters
        assert broken.current_version() == 0
    finally:
        broken.stop()  # "crash" with the message received but never recorded, so never acked

    fixed = Coordinator(cfg).start()
    try:
        assert wait_until(lambda: _committed(fixed) == _ids(paths), 20), fixed.counters
    finally:
        fixed.stop()
