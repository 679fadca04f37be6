"""Replay reader against the real Coordinator, mosquitto and SeaweedFS: binding, deltas, prefetch, failures."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from helpers.dataplane import make_coordinator, make_uplink, mqtt_ep, s3_ep, uid, wait_until, write_episode

from lwd_learner.coordinator import EpisodeRecord, SqliteSnapshotReader, SqliteSnapshotStore
from lwd_learner.localstack import MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3
from lwd_learner.replay_reader import (
    LoadStatus,
    ReaderConfig,
    SnapshotReplayReader,
    SnapshotWatcher,
    agree_version,
    feed_buffer,
)
from lwd_protocol.episode_io import read_episode
from lwd_protocol.names import MqttTopics
from lwd_protocol.store import EPISODES_BUCKET, episode_key
from lwd_protocol.transport import connect_mqtt, make_mqtt_client, make_s3_client, stop_mqtt


def _ids(paths) -> set[str]:
    return {p.name.removesuffix(".mcap") for p in paths}


def _produce(broker, store, spool, n: int, steps0: int = 4) -> list:
    """n episodes through a real uplink (upload + announce); returns their spool paths (now deleted)."""
    paths = [write_episode(spool, "robot_01", steps=steps0 + i) for i in range(n)]
    data = {p: p.read_bytes() for p in paths}
    uplink = make_uplink(broker, store, "robot_01", spool)
    try:
        assert uplink.drain(20), uplink.counters
    finally:
        uplink.close()
    return [(p, data[p]) for p in paths]


def _committed_ids(coord) -> set[str]:
    v = coord.current_version()
    return {e.episode_id for e in coord.get_snapshot(v)} if v else set()


def _reader(coord, store, **kw) -> SnapshotReplayReader:
    """A reader as a learner process builds it: read-only DB handle, its own S3 client."""
    cfg = ReaderConfig(**{"workers": 2, "prefetch": 2, "retries": 2, "backoff_initial_s": 0.05, **kw})
    return SnapshotReplayReader(SqliteSnapshotReader(coord.config.db_path), make_s3_client(s3_ep(store, "admin")), cfg)


def test_reader_loads_a_version_then_only_new_episodes(mqtt_broker, s3_store, coordinator, tmp_path):
    first = _produce(mqtt_broker, s3_store, tmp_path / "spool", 3)
    assert wait_until(lambda: _committed_ids(coordinator) == _ids(p for p, _ in first), 20), coordinator.counters
    reader = _reader(coordinator, s3_store, keep_bytes=True)
    try:
        assert reader.version == 0
        delta1 = reader.advance()
        assert delta1.previous == 0 and delta1.version == coordinator.current_version() >= 1
        assert {r.episode_id for r in delta1.records} == _ids(p for p, _ in first)
        loaded = list(reader.load(delta1.records))
        assert [x.record.episode_id for x in loaded] == [r.episode_id for r in delta1.records], "order kept"
        by_id = {p.name.removesuffix(".mcap"): data for p, data in first}
        for item in loaded:
            assert item.ok, item.error
            original = by_id[item.record.episode_id]
            assert item.data == original and hashlib.sha256(item.data).hexdigest() == item.record.sha256
            ep = item.episode
            assert ep.start.episode_id == item.record.episode_id and ep.num_steps == item.record.num_steps
            # write_episode records joint state q_t = t and action q_t + 0.5 in every joint
            np.testing.assert_array_equal(ep.joint_position[:, 0], np.arange(ep.num_steps, dtype=np.float32))
            np.testing.assert_array_equal(ep.action[:, 3], np.arange(ep.num_steps, dtype=np.float32) + 0.5)

        same = reader.advance()
        assert not same.changed and same.records == () and reader.version == delta1.version

        second = _produce(mqtt_broker, s3_store, tmp_path / "spool", 2, steps0=9)
        all_ids = _ids(p for p, _ in first + second)
        assert wait_until(lambda: _committed_ids(coordinator) == all_ids, 20), coordinator.counters
        delta2 = reader.advance()
        assert delta2.previous == delta1.version < delta2.version
        assert {r.episode_id for r in delta2.records} == _ids(p for p, _ in second), "only the new episodes"
        assert all(x.ok for x in reader.load(delta2.records))
        # cumulative snapshots: the deltas partition the newest snapshot
        newest = {r.episode_id for r in reader.records()}
        assert newest == all_ids and not (
            {r.episode_id for r in delta1.records} & {r.episode_id for r in delta2.records}
        )

        old = reader.bind(delta1.version)  # rebinding to an older committed version is allowed
        assert {r.episode_id for r in old} == _ids(p for p, _ in first) and reader.version == delta1.version
        with pytest.raises(ValueError, match="not committed"):
            reader.advance(delta2.version + 50)
        with pytest.raises(ValueError, match="int >= 0"):
            reader.advance(-1)
    finally:
        reader.close()


def test_missing_corrupt_and_undecodable_payloads_are_reported(mqtt_broker, s3_store, coordinator, tmp_path):
    produced = _produce(mqtt_broker, s3_store, tmp_path / "spool", 4)
    assert wait_until(lambda: _committed_ids(coordinator) == _ids(p for p, _ in produced), 20)
    admin = s3_store.client("admin")
    reader = _reader(coordinator, s3_store)
    junk_key = episode_key("robot_01", uid("junk"))
    try:
        records = list(reader.advance().records)
        corrupt, missing = records[0], records[1]
        original = {p.name.removesuffix(".mcap"): data for p, data in produced}[corrupt.episode_id]
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0xFF
        admin.put_object(EPISODES_BUCKET, corrupt.key, io.BytesIO(bytes(flipped)), len(flipped))
        admin.remove_object(EPISODES_BUCKET, missing.key)
        # a record whose bytes hash right but are not an episode (the reader must not trust the hash alone)
        junk = b"not an mcap file at all" * 10
        admin.put_object(EPISODES_BUCKET, junk_key, io.BytesIO(junk), len(junk))
        undecodable = EpisodeRecord(
            junk_key.split("/")[1].removesuffix(".mcap"),
            "robot_01",
            junk_key,
            hashlib.sha256(junk).hexdigest(),
            len(junk),
            corrupt.task,
            "success",
            1,
            "online",
            0,
            0,
            1,
        )

        results = {x.record.episode_id: x for x in reader.load([*records, undecodable])}
        assert results[corrupt.episode_id].status is LoadStatus.CORRUPT
        assert "payload mismatch" in results[corrupt.episode_id].error
        assert results[missing.episode_id].status is LoadStatus.MISSING
        assert missing.key in results[missing.episode_id].error
        assert results[undecodable.episode_id].status is LoadStatus.CORRUPT
        assert "undecodable" in results[undecodable.episode_id].error
        assert all(results[r.episode_id].ok for r in records[2:])
        assert set(reader.failures) == {corrupt.episode_id, missing.episode_id, undecodable.episode_id}

        admin.put_object(EPISODES_BUCKET, corrupt.key, io.BytesIO(original), len(original))  # repaired
        retried = {x.record.episode_id: x.status for x in reader.retry_failed()}
        assert retried[corrupt.episode_id] is LoadStatus.OK
        assert set(reader.failures) == {missing.episode_id, undecodable.episode_id}
    finally:
        reader.close()
        admin.remove_object(EPISODES_BUCKET, junk_key)  # the bucket is shared with later tests' sweeps


@pytest.fixture
def own_store(tmp_path) -> Iterator[SeaweedS3]:
    store = SeaweedS3(tmp_path / "weed", [S3Identity.generate("admin", ("Admin", "Read", "List", "Write"))]).start()
    try:
        yield store
    finally:
        store.stop()


def _put_episode(store, tmp_path) -> EpisodeRecord:
    path = write_episode(tmp_path / "eps", "robot_01", steps=5)
    data = path.read_bytes()
    ep = read_episode(data, load_images=False)
    key = episode_key("robot_01", ep.start.episode_id)
    store.client("admin").put_object(EPISODES_BUCKET, key, io.BytesIO(data), len(data))
    sha = hashlib.sha256(data).hexdigest()
    return EpisodeRecord(
        ep.start.episode_id, "robot_01", key, sha, len(data), ep.start.task, "success", 5, "online", 0, 0
    )


def test_reader_retries_through_a_store_outage(own_store, tmp_path):
    rec = _put_episode(own_store, tmp_path)
    s3 = make_s3_client(s3_ep(own_store, "admin"))
    store_db = SqliteSnapshotStore(tmp_path / "unused.db")  # loading needs records only, not versions
    patient = SnapshotReplayReader(store_db, s3, ReaderConfig(retries=40, backoff_initial_s=0.1, backoff_max_s=0.5))
    impatient = SnapshotReplayReader(store_db, s3, ReaderConfig(retries=1, backoff_initial_s=0.05))
    try:
        own_store.stop()
        gave_up = next(impatient.load([rec]))
        assert gave_up.status is LoadStatus.UNREACHABLE and gave_up.attempts == 2, gave_up
        assert rec.episode_id in impatient.failures

        result: list = []
        loader = threading.Thread(target=lambda: result.extend(patient.load([rec])))
        loader.start()
        time.sleep(0.5)  # the first attempts hit a dead store
        own_store.restart()
        loader.join(60)
        assert result and result[0].ok, result
        assert result[0].attempts > 1
        assert result[0].episode.num_steps == 5
    finally:
        patient.close()
        impatient.close()


def _commit(store: SqliteSnapshotStore, n: int, tag: str) -> list[str]:
    now = time.time_ns()
    ids = [f"robot_01-{tag}-{i}" for i in range(n)]
    for eid in ids:
        key = episode_key("robot_01", eid)
        store.add_episode(
            EpisodeRecord(eid, "robot_01", key, "0" * 64, 1, "restocking", "success", 1, "online", now, now)
        )
    store.commit_snapshot(ids)
    return ids


def test_sqlite_reader_is_read_only_and_sees_new_commits(tmp_path):
    db = tmp_path / "snap.db"
    with pytest.raises(FileNotFoundError, match="no snapshot database"):
        SqliteSnapshotReader(db)
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="not a Coordinator snapshot database"):
        SqliteSnapshotReader(tmp_path / "junk.db")

    writer = SqliteSnapshotStore(db)
    reader = SqliteSnapshotReader(db)
    try:
        assert reader.current_version() == 0 and reader.list_snapshots() == []
        a = _commit(writer, 2, "a")
        b = _commit(writer, 3, "b")
        assert reader.current_version() == 2
        assert [s.version for s in reader.list_snapshots()] == [1, 2]
        assert [s.num_episodes for s in reader.list_snapshots()] == [2, 5]
        assert {r.episode_id for r in reader.get_delta(0, 1)} == set(a)
        assert {r.episode_id for r in reader.get_delta(1, 2)} == set(b)
        assert {r.episode_id for r in reader.get_snapshot(2)} == set(a) | set(b)
        assert reader.get_delta(2, 2) == []
        with pytest.raises(ValueError, match="bad version range"):
            reader.get_delta(2, 1)
        with pytest.raises(KeyError, match="no snapshot version 3"):
            reader.get_delta(0, 3)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._db.execute("UPDATE pointer SET version = 99")
        assert writer.unknown_keys([episode_key("robot_01", a[0]), "robot_01/other.mcap"]) == {"robot_01/other.mcap"}
    finally:
        reader.close()
        writer.close()


def test_hosts_agree_on_the_minimum_version(tmp_path):
    writer = SqliteSnapshotStore(tmp_path / "snap.db")
    for tag in "abc":
        _commit(writer, 2, tag)
    hosts = 3
    barrier = threading.Barrier(hosts)
    slots: list[np.ndarray | None] = [None] * hosts

    def local_allgather(rank: int):
        """What process_allgather does across hosts, across threads here."""

        def gather(x: np.ndarray) -> np.ndarray:
            slots[rank] = np.asarray(x)
            barrier.wait(10)
            out = np.stack([s for s in slots])
            barrier.wait(10)
            return out

        return gather

    # host 2 saw only version 2 when it looked (the Coordinator committed v3 right after)
    local_newest = [3, 3, 2]
    readers = [SnapshotReplayReader(SqliteSnapshotReader(tmp_path / "snap.db"), None) for _ in range(hosts)]
    deltas: list = [None] * hosts

    def host(rank: int) -> None:
        deltas[rank] = readers[rank].advance(local_newest[rank], allgather=local_allgather(rank))

    threads = [threading.Thread(target=host, args=(r,)) for r in range(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        assert [d.version for d in deltas] == [2, 2, 2]
        assert all({r.episode_id for r in d.records} == {r.episode_id for r in deltas[0].records} for d in deltas)
        assert len(deltas[0].records) == 4
        assert agree_version(5, lambda x: np.array([[7], [5], [6]])) == 5
        with pytest.raises(ValueError, match="int >= 0"):
            agree_version(-1, lambda x: x)
        with pytest.raises(ValueError, match="no versions"):
            agree_version(1, lambda x: np.array([], np.int64))
    finally:
        for r in readers:
            r.close()
        writer.close()


def test_reader_config_rejects_bad_values():
    with pytest.raises(ValueError, match="workers"):
        ReaderConfig(workers=0)
    with pytest.raises(ValueError, match="prefetch"):
        ReaderConfig(prefetch=0)
    with pytest.raises(ValueError, match="keep_bytes"):
        ReaderConfig(decode=False)


def test_watcher_follows_snapshot_announcements_and_feeds_a_replay_buffer(s3_store, tmp_path):
    broker = MosquittoBroker(
        tmp_path / "mosq",
        [
            MqttIdentity.generate("coordinator", "coordinator"),
            MqttIdentity.generate("learner", "learner"),
            MqttIdentity.generate("admin", "admin"),
            MqttIdentity.generate("robot_01", "robot"),
        ],
    ).start()
    coord = make_coordinator(broker, s3_store, tmp_path / "coord.db", uid("coord-watch")).start()
    watcher = SnapshotWatcher(mqtt_ep(broker, "learner", uid("learner"))).start()
    admin = connect_mqtt(make_mqtt_client(mqtt_ep(broker, "admin", uid("admin"))), mqtt_ep(broker, "admin"))
    reader = None
    try:
        assert coord.subscribed.wait(10)
        produced = _produce(broker, s3_store, tmp_path / "spool", 3)
        assert watcher.wait_newer(0, 20) >= 1
        assert wait_until(lambda: _committed_ids(coord) == _ids(p for p, _ in produced), 20)
        assert wait_until(lambda: watcher.version == coord.current_version(), 10)

        info = admin.publish(MqttTopics.snapshots(), b"{not json", qos=1)
        info.wait_for_publish(5)
        bad = admin.publish(MqttTopics.snapshots(), json.dumps({"version": "7"}), qos=1)
        bad.wait_for_publish(5)
        assert wait_until(lambda: watcher.errors == 2, 10)
        assert watcher.version == coord.current_version(), "malformed announcements change nothing"

        from lwd_learner.dataset import compute_normalizer, from_episode
        from lwd_learner.replay import ReplayBuffer

        reader = _reader(coord, s3_store, load_images=False)
        items = list(reader.load(reader.advance(watcher.version).records))
        converted = [from_episode(x.episode, "joint_positions") for x in items]
        buffer = ReplayBuffer(
            compute_normalizer(converted, state_source="joint_positions", horizon=2), horizon=2, gamma=0.9
        )
        convert = lambda e: from_episode(e, "joint_positions")  # noqa: E731
        added, failed = feed_buffer(buffer, items, convert)
        assert failed == [] and added == len(buffer) > 0 and buffer.num_episodes == 3
        assert feed_buffer(buffer, items, convert) == (0, []), "re-feeding a snapshot is idempotent"
    finally:
        if reader is not None:
            reader.close()
        stop_mqtt(admin)
        watcher.stop()
        coord.stop()
        broker.stop()
