"""The Coordinator's sweep: episodes uploaded but never announced (lost with a killed broker) still get committed."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator

import pytest
from helpers.dataplane import make_coordinator, mqtt_ep, uid, wait_until, write_episode

from lwd_learner.coordinator import Coordinator
from lwd_learner.localstack import S3Identity, SeaweedS3
from lwd_protocol.announce import EpisodeAnnouncement
from lwd_protocol.names import MqttTopics
from lwd_protocol.store import EPISODES_BUCKET, POLICIES_BUCKET, episode_key
from lwd_protocol.tasks import TASK_NAMES
from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt


@pytest.fixture
def own_store(tmp_path) -> Iterator[SeaweedS3]:
    """A fresh bucket: the sweep lists everything, and the session store holds other tests' objects."""
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


def _put(store, key: str, data: bytes, sha256: str | None) -> None:
    """Upload like the uplink does (sha256 in the object metadata), without announcing."""
    meta = {"sha256": sha256} if sha256 is not None else None
    store.client("admin").put_object(EPISODES_BUCKET, key, io.BytesIO(data), len(data), metadata=meta)


def _upload_unannounced(store, spool, sha_override: str | None = "") -> tuple[str, str, bytes]:
    path = write_episode(spool, "robot_01")
    data = path.read_bytes()
    eid = path.name.removesuffix(".mcap")
    key = episode_key("robot_01", eid)
    _put(store, key, data, hashlib.sha256(data).hexdigest() if sha_override == "" else sha_override)
    path.unlink()  # the robot deleted it after a PUBACK the broker then forgot
    return eid, key, data


def _committed(coord: Coordinator) -> set[str]:
    v = coord.current_version()
    return {e.episode_id for e in coord.get_snapshot(v)} if v else set()


def test_sweep_commits_unannounced_episodes_and_quarantines_bad_objects(mqtt_broker, own_store, tmp_path):
    spool = tmp_path / "spool"
    good = [_upload_unannounced(own_store, spool) for _ in range(2)]
    wrong_sha = _upload_unannounced(own_store, spool, sha_override="ab" * 32)
    no_sha = _upload_unannounced(own_store, spool, sha_override=None)
    _put(own_store, "stray.mcap", b"x" * 10, None)  # not under a robot prefix
    _put(own_store, "robot_01/readme.txt", b"not an episode", None)  # not an episode object: ignored

    db = tmp_path / "coord.db"
    patient = make_coordinator(mqtt_broker, own_store, db, uid("coord-grace"), sweep_interval_s=None)
    assert patient.sweep() == 0  # default grace (60 s): the announcements may still be on their way
    assert patient.counters.recovered == 0 and patient.store.pending_episodes() == []
    assert patient.quarantined() == []
    patient.store.close()

    coord = make_coordinator(
        mqtt_broker, own_store, db, uid("coord-sweep"), sweep_interval_s=0.5, sweep_grace_s=0.0, sweep_batch=1
    )
    coord.start()
    try:
        # one object per worker turn (sweep_batch=1): the continuation passes get through all of them
        assert wait_until(lambda: _committed(coord) == {g[0] for g in good}, 20), coord.counters
        assert wait_until(lambda: len(coord.quarantined()) == 3, 20), coord.quarantined()
        assert coord.counters.recovered == 2
        reasons = {q.key: q.reason for q in coord.quarantined()}
        assert set(reasons) == {wrong_sha[1], no_sha[1], "stray.mcap"}, reasons
        assert "sweep" in reasons[wrong_sha[1]] and "sha256 mismatch" in reasons[wrong_sha[1]]
        assert "no sha256 metadata" in reasons[no_sha[1]]
        assert "foreign key" in reasons["stray.mcap"]
        sweeps = coord.counters.sweeps
        assert wait_until(lambda: coord.counters.sweeps >= sweeps + 2, 10)
        assert len(coord.quarantined()) == 3 and coord.counters.recovered == 2, "known keys are never redone"

        # the lost announcement arrives after all (a robot resent it): a duplicate, no new version
        version, dups = coord.current_version(), coord.counters.duplicates
        eid, key, data = good[0]
        ann = EpisodeAnnouncement(
            episode_id=eid,
            robot_id="robot_01",
            key=key,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            task=TASK_NAMES[0],
            outcome="success",
            num_steps=6,
            committed_at_ns=time.time_ns(),
        )
        ep = mqtt_ep(mqtt_broker, "robot_01", uid("raw-robot_01"))
        robot = connect_mqtt(make_mqtt_client(ep), ep)
        try:
            info = robot.publish(MqttTopics.episodes("robot_01"), ann.to_json(), qos=1)
            info.wait_for_publish(5)
        finally:
            stop_mqtt(robot)
        assert wait_until(lambda: coord.counters.duplicates == dups + 1, 20), coord.counters
        coord.flush()
        time.sleep(0.5)
        assert coord.current_version() == version and len(coord.quarantined()) == 3
    finally:
        coord.stop()
