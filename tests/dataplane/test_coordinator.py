"""Uplink -> S3 -> MQTT -> Coordinator against the real mosquitto and SeaweedFS fixtures."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time

import pytest
from helpers.dataplane import make_uplink, mqtt_ep, uid, wait_until, write_episode

from lwd_protocol.announce import EpisodeAnnouncement
from lwd_protocol.episode_io import read_episode
from lwd_protocol.names import MqttTopics
from lwd_protocol.store import EPISODES_BUCKET, episode_key
from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt


@pytest.fixture
def robot_pub(mqtt_broker):
    """A raw robot_01 MQTT client for hand-made (possibly hostile) announcements."""
    ep = mqtt_ep(mqtt_broker, "robot_01", uid("raw-robot_01"))
    client = connect_mqtt(make_mqtt_client(ep), ep)
    yield client
    stop_mqtt(client)


def _publish(client, topic: str, payload: bytes) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(5)
    assert info.is_published()


def _upload_raw(s3_store, robot_id: str, path, data: bytes | None = None) -> EpisodeAnnouncement:
    """Upload a spool file as a robot would (optionally with other bytes) and return its announcement."""

    real = path.read_bytes()
    ep = read_episode(real, load_images=False)
    body = real if data is None else data
    key = episode_key(robot_id, ep.start.episode_id)
    s3_store.client(robot_id).put_object(EPISODES_BUCKET, key, io.BytesIO(body), len(body))
    return EpisodeAnnouncement(
        episode_id=ep.start.episode_id,
        robot_id=robot_id,
        key=key,
        sha256=hashlib.sha256(real).hexdigest(),
        size=len(real),
        task=ep.start.task,
        outcome=ep.end.outcome.value,
        num_steps=ep.num_steps,
        committed_at_ns=time.time_ns(),
    )


def test_uplink_uploads_announces_deletes_and_coordinator_commits(mqtt_broker, s3_store, coordinator, tmp_path):
    spool = tmp_path / "spool"
    paths = [write_episode(spool, "robot_01", steps=4 + i) for i in range(3)]
    (spool / "in-progress.mcap.partial").write_bytes(b"not yet")  # never touched by the uplink
    uplink = make_uplink(mqtt_broker, s3_store, "robot_01", spool)
    try:
        assert uplink.drain(timeout_s=20)
    finally:
        uplink.close()
    assert not any(p.exists() for p in paths), "spool files must go once the broker acked"
    assert (spool / "in-progress.mcap.partial").exists()
    c = uplink.counters
    assert (c.uploaded, c.announced, c.pending) == (3, 3, 0)

    assert coordinator.wait_for_version(1, timeout_s=20)
    coordinator.flush()
    ids = {p.name.removesuffix(".mcap") for p in paths}
    assert wait_until(
        lambda: {e.episode_id for e in coordinator.get_snapshot(coordinator.current_version())} == ids, 10
    )
    snap = coordinator.get_snapshot(coordinator.current_version())
    by_id = {e.episode_id: e for e in snap}
    for p in paths:
        rec = by_id[p.name.removesuffix(".mcap")]
        assert rec.robot_id == "robot_01" and rec.key == episode_key("robot_01", rec.episode_id)
        assert rec.source == "online" and rec.outcome == "success"
        stat = s3_store.client("admin").stat_object(EPISODES_BUCKET, rec.key)
        assert stat.size == rec.size
    assert sorted(e.num_steps for e in snap) == [4, 5, 6]
    stats = coordinator.robot_stats()["robot_01"]
    assert stats.committed == 3 and stats.steps == 15
    latencies_ms = [(coordinator.store.snapshot_info(e.version).created_at_ns - e.committed_at_ns) / 1e6 for e in snap]
    print(f"episode committed -> in snapshot: max {max(latencies_ms):.0f} ms over {len(snap)} episodes")


def test_duplicate_announcement_is_deduplicated(s3_store, coordinator, robot_pub, tmp_path):
    ann = _upload_raw(s3_store, "robot_01", write_episode(tmp_path, "robot_01"))
    for _ in range(3):
        _publish(robot_pub, MqttTopics.episodes("robot_01"), ann.to_json())
    assert wait_until(lambda: coordinator.counters.duplicates == 2, 15), coordinator.counters
    assert coordinator.counters.verified == 1
    assert coordinator.wait_for_version(1, 10)
    assert [e.episode_id for e in coordinator.get_snapshot(1)] == [ann.episode_id]
    assert coordinator.robot_stats()["robot_01"].duplicates == 2


def test_bad_announcements_are_quarantined_and_coordinator_keeps_running(s3_store, coordinator, robot_pub, tmp_path):
    topic = MqttTopics.episodes("robot_01")
    good = _upload_raw(s3_store, "robot_01", write_episode(tmp_path, "robot_01"))
    # bad sha: announcement claims other bytes than were uploaded
    bad_sha = _upload_raw(s3_store, "robot_01", write_episode(tmp_path, "robot_01"))
    bad_sha = EpisodeAnnouncement(**{**bad_sha.__dict__, "sha256": "0" * 64})
    # truncated MCAP: the object is the first half of a real episode, announced with matching sha/size
    trunc_path = write_episode(tmp_path, "robot_01")
    half = trunc_path.read_bytes()[: trunc_path.stat().st_size // 2]
    trunc = _upload_raw(s3_store, "robot_01", trunc_path, data=half)
    # announce what is really stored (sha and size match), so only decoding can catch it
    trunc = EpisodeAnnouncement(**{**trunc.__dict__, "sha256": hashlib.sha256(half).hexdigest(), "size": len(half)})
    # payload robot differs from the topic's robot (robot_01 announcing robot_02's episode)
    other = write_episode(tmp_path, "robot_02")
    spoof = _upload_raw(s3_store, "robot_02", other)
    missing = EpisodeAnnouncement(
        **{**good.__dict__, "episode_id": "robot_01-gone", "key": "robot_01/robot_01-gone.mcap"}
    )

    for payload in (
        b"\x00garbage{",
        b'{"v": 1}',
        bad_sha.to_json(),
        trunc.to_json(),
        spoof.to_json(),
        missing.to_json(),
    ):
        _publish(robot_pub, topic, payload)
    _publish(robot_pub, topic, good.to_json())  # the coordinator is still alive after all of that

    assert coordinator.wait_for_version(1, 20)
    assert wait_until(lambda: len(coordinator.quarantined()) == 6, 10), coordinator.quarantined()
    reasons = [q.reason for q in coordinator.quarantined()]
    assert "not UTF-8 JSON" in reasons[0]
    assert "'episode_id': missing" in reasons[1]
    assert "sha256 mismatch" in reasons[2]
    assert reasons[3].startswith("schema:")
    assert "robot mismatch" in reasons[4]
    assert "object missing" in reasons[5]
    assert all(q.robot_id == "robot_01" for q in coordinator.quarantined())
    assert [e.episode_id for e in coordinator.get_snapshot(coordinator.current_version())] == [good.episode_id]
    # quarantined objects are kept for inspection
    assert s3_store.client("admin").stat_object(EPISODES_BUCKET, bad_sha.key).size > 0
    assert coordinator.robot_stats()["robot_01"].quarantined == 6


def test_robot_cannot_announce_on_another_robots_topic(s3_store, coordinator, robot_pub, tmp_path):
    spoof = _upload_raw(s3_store, "robot_02", write_episode(tmp_path, "robot_02"))
    _publish(robot_pub, MqttTopics.episodes("robot_02"), spoof.to_json())  # broker ACL drops it silently
    sentinel = _upload_raw(s3_store, "robot_01", write_episode(tmp_path, "robot_01"))
    _publish(robot_pub, MqttTopics.episodes("robot_01"), sentinel.to_json())  # same client: ordered after
    assert coordinator.wait_for_version(1, 20)
    assert coordinator.counters.received == 1
    assert [e.episode_id for e in coordinator.get_snapshot(1)] == [sentinel.episode_id]


def _snapshot_size(coord) -> int:
    v = coord.current_version()
    return len(coord.get_snapshot(v)) if v else 0


def test_snapshot_versions_are_monotonic_and_immutable(s3_store, coordinator, robot_pub, tmp_path):
    total = 0
    for batch in range(3):
        for _ in range(batch + 1):
            ann = _upload_raw(s3_store, "robot_01", write_episode(tmp_path, "robot_01"))
            _publish(robot_pub, MqttTopics.episodes("robot_01"), ann.to_json())
        total += batch + 1
        assert wait_until(lambda n=total: _snapshot_size(coordinator) == n, 20)
    seen = [[e.episode_id for e in coordinator.get_snapshot(v)] for v in range(1, coordinator.current_version() + 1)]
    versions = list(range(1, coordinator.current_version() + 1))
    assert len(versions) >= 3
    for v in versions[1:]:
        prev, cur = set(seen[v - 2]), set(seen[v - 1])
        assert prev < cur, "each version = previous version's episodes + new ones"
        assert coordinator.store.snapshot_info(v).parent == v - 1
    # committed versions read back identically, and the DB itself refuses to change them
    assert [[e.episode_id for e in coordinator.get_snapshot(v)] for v in versions] == seen
    db = sqlite3.connect(coordinator.config.db_path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            db.execute("UPDATE episodes SET version = 99 WHERE version = 1")
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            db.execute("DELETE FROM snapshots WHERE version = 1")
    finally:
        db.close()
    with pytest.raises(KeyError):
        coordinator.get_snapshot(versions[-1] + 1)


def test_snapshot_is_announced_retained(mqtt_broker, s3_store, coordinator, robot_pub, tmp_path):
    ann = _upload_raw(s3_store, "robot_01", write_episode(tmp_path, "robot_01"))
    _publish(robot_pub, MqttTopics.episodes("robot_01"), ann.to_json())
    assert coordinator.wait_for_version(1, 20)
    ep = mqtt_ep(mqtt_broker, "learner", uid("learner"))
    got: list[dict] = []
    client = make_mqtt_client(ep)
    client.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    connect_mqtt(client, ep)
    try:
        client.subscribe(MqttTopics.snapshots(), qos=1)
        # retained: a learner that connects after the commit still sees the newest version
        assert wait_until(lambda: bool(got), 10)
        assert got[-1]["version"] == coordinator.current_version() and got[-1]["num_episodes"] == 1
    finally:
        stop_mqtt(client)
