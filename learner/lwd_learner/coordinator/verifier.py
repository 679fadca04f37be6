"""Turn one MQTT announcement into a verified EpisodeRecord, or say precisely why not.

Two failure kinds, handled differently by the Coordinator:
- Quarantine: the announcement or the object is wrong (bad JSON, robot mismatch, missing
  object, size/sha256 mismatch, undecodable MCAP). Permanent: record the reason and ack.
- TransientError: the store is unreachable or refuses us. Not the robot's fault: do not ack,
  retry later, so the broker keeps the message.

`verify_object` is the second way in: the Coordinator's sweep finds episode objects that were
uploaded but never announced (a broker killed before it persisted an acknowledged message, a
robot that died between upload and announce) and verifies them from the object alone.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lwd_learner.coordinator.records import EpisodeRecord, QuarantineRecord
from lwd_protocol.announce import AnnouncementError, EpisodeAnnouncement
from lwd_protocol.episode import EPISODE_SUFFIX
from lwd_protocol.episode_io import Episode, EpisodeFormatError, read_episode
from lwd_protocol.names import MqttTopics
from lwd_protocol.store import EPISODES_BUCKET, episode_key

PAYLOAD_HEAD_BYTES = 512
_MISSING_CODES = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")


class Quarantine(Exception):  # noqa: N818 - a verdict, not an error of ours
    def __init__(self, record: QuarantineRecord):
        self.record = record
        super().__init__(record.reason)


class TransientError(Exception):
    """The object store could not answer; retry the same message later."""


@dataclass(frozen=True)
class VerifierConfig:
    bucket: str = EPISODES_BUCKET
    max_episode_bytes: int = 4 * 1024**3
    work_dir: Path | None = None  # where downloads land (deleted after decoding)


class EpisodeVerifier:
    def __init__(self, s3, config: VerifierConfig | None = None):
        self.s3 = s3
        self.config = config or VerifierConfig()

    def parse(self, topic: str, payload: bytes) -> EpisodeAnnouncement:
        """Check topic, JSON schema and topic robot == payload robot; raise Quarantine otherwise."""
        head = bytes(payload[:PAYLOAD_HEAD_BYTES])
        try:
            topic_robot = MqttTopics.robot_id_from_topic(topic)
        except ValueError as exc:
            raise Quarantine(QuarantineRecord(f"foreign topic: {exc}", topic, payload_head=head)) from exc
        try:
            ann = EpisodeAnnouncement.from_json(payload)
        except AnnouncementError as exc:
            raise Quarantine(QuarantineRecord(str(exc), topic, robot_id=topic_robot, payload_head=head)) from exc
        if ann.robot_id != topic_robot:
            reason = f"robot mismatch: payload robot_id {ann.robot_id!r} published on {topic_robot!r}'s topic"
            raise Quarantine(self._q(ann, topic, reason, head, robot_id=topic_robot))
        return ann

    def verify(self, topic: str, payload: bytes) -> EpisodeRecord:
        """Parse, stat, download, hash and decode; return the record to store."""
        ann = self.parse(topic, payload)
        head = bytes(payload[:PAYLOAD_HEAD_BYTES])

        def bad(reason: str) -> QuarantineRecord:
            return self._q(ann, topic, reason, head)

        self.check_exists(ann.key, ann.size, ann.sha256, on_bad=bad)
        episode = self._fetch_decoded(ann.key, ann.size, ann.sha256, bad)
        start, end = episode.start, episode.end
        problems = []
        if end is None:
            problems.append("episode has no end record")
        if start.episode_id != ann.episode_id or start.robot_id != ann.robot_id:
            problems.append(f"file is {start.robot_id}/{start.episode_id}")
        if episode.num_steps != ann.num_steps:
            problems.append(f"file has {episode.num_steps} steps, announced {ann.num_steps}")
        if start.task != ann.task:
            problems.append(f"file task {start.task!r} != announced {ann.task!r}")
        if problems:
            raise Quarantine(bad("content mismatch: " + "; ".join(problems)))
        return EpisodeRecord(
            episode_id=ann.episode_id,
            robot_id=ann.robot_id,
            key=ann.key,
            sha256=ann.sha256,
            size=ann.size,
            task=ann.task,
            outcome=end.outcome.value,
            num_steps=episode.num_steps,
            source=start.source.value,
            committed_at_ns=ann.committed_at_ns,
            verified_at_ns=time.time_ns(),
            policy_version=int(episode.policy_version.max()) if episode.num_steps else 0,
        )

    # --- the sweep: objects that were uploaded but whose announcement never arrived -----------
    def list_episode_objects(self, uploaded_before_ns: int) -> list[tuple[str, int]]:
        """(key, upload time ns) of every episode object uploaded before the given time, oldest first."""
        found = []
        try:
            for obj in self.s3.list_objects(self.config.bucket, recursive=True):
                if obj.is_dir or not obj.object_name.endswith(EPISODE_SUFFIX) or obj.last_modified is None:
                    continue
                uploaded_ns = int(obj.last_modified.timestamp() * 1e9)
                if uploaded_ns <= uploaded_before_ns:
                    found.append((obj.object_name, uploaded_ns))
        except Exception as exc:  # store down or refusing: try again at the next sweep
            raise TransientError(f"list {self.config.bucket}: {type(exc).__name__}: {exc}") from exc
        return sorted(found, key=lambda kv: (kv[1], kv[0]))

    def verify_object(self, key: str, uploaded_at_ns: int) -> EpisodeRecord | None:
        """Verify an object nobody announced, from the object alone; None if it vanished meanwhile.

        The robot's sha256 (object metadata, written by the uplink) stands in for the announcement;
        the robot is the key's prefix, so this trusts the store's per-robot write permissions.
        `committed_at_ns` becomes the upload time (the robot's commit time is only in the announcement).
        """
        from minio.error import S3Error

        robot_id, _, name = key.partition("/")
        episode_id = name.removesuffix(EPISODE_SUFFIX)

        def bad(reason: str) -> QuarantineRecord:
            return QuarantineRecord(f"sweep (never announced): {reason}", "", robot_id or None, episode_id, key)

        try:
            if episode_key(robot_id, episode_id) != key:
                raise ValueError("not of the form <robot>/<episode>.mcap")
        except ValueError as exc:
            raise Quarantine(bad(f"foreign key {key!r}: {exc}")) from exc
        try:
            stat = self.s3.stat_object(self.config.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return None
            raise TransientError(f"stat {key}: {exc.code}: {exc.message}") from exc
        except Exception as exc:
            raise TransientError(f"stat {key}: {type(exc).__name__}: {exc}") from exc
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        sha256 = meta.get("x-amz-meta-sha256")
        if sha256 is None:
            raise Quarantine(bad("object has no sha256 metadata, so its integrity cannot be checked"))
        if stat.size > self.config.max_episode_bytes:
            raise Quarantine(bad(f"size {stat.size} exceeds limit {self.config.max_episode_bytes}"))
        episode = self._fetch_decoded(key, stat.size, sha256, bad)
        start, end = episode.start, episode.end
        if end is None:
            raise Quarantine(bad("episode has no end record"))
        if start.episode_id != episode_id or start.robot_id != robot_id:
            raise Quarantine(bad(f"content mismatch: file is {start.robot_id}/{start.episode_id}"))
        return EpisodeRecord(
            episode_id=episode_id,
            robot_id=robot_id,
            key=key,
            sha256=sha256,
            size=stat.size,
            task=start.task,
            outcome=end.outcome.value,
            num_steps=episode.num_steps,
            source=start.source.value,
            committed_at_ns=uploaded_at_ns,
            verified_at_ns=time.time_ns(),
            policy_version=int(episode.policy_version.max()) if episode.num_steps else 0,
        )

    def _fetch_decoded(self, key: str, size: int, sha256: str, bad) -> Episode:
        """Download, check size and sha256, decode without images; Quarantine(bad(reason)) on any mismatch."""
        with tempfile.TemporaryDirectory(prefix="lwd-verify-", dir=self.config.work_dir) as tmp:
            path = Path(tmp) / "episode.mcap"
            digest, got = self._download(key, path)
            if got != size:
                raise Quarantine(bad(f"size mismatch: downloaded {got} != expected {size}"))
            if digest != sha256:
                raise Quarantine(bad(f"sha256 mismatch: object hashes to {digest}"))
            try:
                return read_episode(path, load_images=False)
            except EpisodeFormatError as exc:
                raise Quarantine(bad(f"schema: {exc}")) from exc

    def check_exists(self, key: str, size: int, sha256: str, on_bad):
        """Stat the object: missing / wrong size / wrong sha metadata -> Quarantine(on_bad(reason))."""
        from minio.error import S3Error

        if size > self.config.max_episode_bytes:
            raise Quarantine(on_bad(f"announced size {size} exceeds limit {self.config.max_episode_bytes}"))
        try:
            stat = self.s3.stat_object(self.config.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise Quarantine(on_bad(f"object missing: {self.config.bucket}/{key}")) from exc
            raise TransientError(f"stat {key}: {exc.code}: {exc.message}") from exc
        except Exception as exc:  # connection refused, timeouts, DNS: the store, not the episode
            raise TransientError(f"stat {key}: {type(exc).__name__}: {exc}") from exc
        if stat.size != size:
            raise Quarantine(on_bad(f"size mismatch: object is {stat.size} bytes, announced {size}"))
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        stored = meta.get("x-amz-meta-sha256")
        if stored is not None and stored != sha256:
            raise Quarantine(on_bad(f"sha256 mismatch: object metadata says {stored}"))
        return stat

    def _download(self, key: str, path: Path) -> tuple[str, int]:
        h = hashlib.sha256()
        size = 0
        try:
            resp = self.s3.get_object(self.config.bucket, key)
            try:
                with open(path, "wb") as f:
                    for chunk in resp.stream(1 << 20):
                        h.update(chunk)
                        f.write(chunk)
                        size += len(chunk)
            finally:
                resp.close()
                resp.release_conn()
        except Exception as exc:
            raise TransientError(f"download {key}: {type(exc).__name__}: {exc}") from exc
        return h.hexdigest(), size

    @staticmethod
    def _q(ann: EpisodeAnnouncement, topic: str, reason: str, head: bytes, robot_id: str | None = None):
        return QuarantineRecord(
            reason=reason,
            topic=topic,
            robot_id=robot_id or ann.robot_id,
            episode_id=ann.episode_id,
            key=ann.key,
            payload_head=head,
            received_at_ns=time.time_ns(),
        )
