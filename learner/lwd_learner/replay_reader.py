"""Learner-side replay reader: bound to one committed snapshot version, episodes prefetched from S3.

Snapshot semantics (set by the Coordinator, see coordinator/snapshot_store.py): versions are
consecutive integers, *cumulative* and immutable. Version v holds every episode whose first
version is <= v, and each episode gets exactly one first version. So the delta (a, b] =
snapshot(b) minus snapshot(a), consecutive deltas partition the data, and a reader bound to a
that advances to b loads only that delta: nothing is read twice and nothing is skipped, however
many versions it jumps over.

The reader never writes to the snapshot database. It reads through the `SnapshotReader`
protocol: `SqliteSnapshotReader` opens the Coordinator's SQLite file read-only (the learner is
another process, often another host), a PostgreSQL deployment implements the same queries.

Payloads come from the episodes bucket on a bounded thread pool (`prefetch` episodes in flight
ahead of the consumer, so memory stays bounded), each with retries and exponential backoff for
store outages, a size + sha256 check against the snapshot's record, and decoding with
`read_episode`. A missing, corrupt or unreachable episode is reported as a `LoadedEpisode`
with a status and the reason; it never raises into the training loop, and `retry_failed()`
tries the failed ones again later.

Advancing happens between training steps: `advance()` moves the binding to the newest committed
version (or a given one) and returns the new records. In multi-host training every host must
use the same version for a step: `agree_version` takes the minimum of the hosts' newest
versions through a caller-supplied allgather (jax's `multihost_utils.process_allgather` on a
pod); a version any host has seen is committed and immutable, so the minimum is readable
everywhere. `SnapshotWatcher` follows the Coordinator's retained MQTT snapshot topic, so a
learner learns of a new version the moment it is committed instead of polling the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from lwd_learner.coordinator.records import EpisodeRecord, SnapshotInfo
from lwd_learner.coordinator.snapshot_store import SnapshotReader, SqliteSnapshotReader
from lwd_protocol.episode_io import Episode, EpisodeFormatError, read_episode
from lwd_protocol.names import MqttTopics
from lwd_protocol.store import EPISODES_BUCKET
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, make_mqtt_client, make_s3_client, start_mqtt, stop_mqtt

log = logging.getLogger(__name__)

_MISSING_CODES = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")


class LoadStatus(str, Enum):
    OK = "ok"
    MISSING = "missing"  # the object is gone from the store
    CORRUPT = "corrupt"  # bytes differ from the record's size/sha256, or do not decode as this episode
    UNREACHABLE = "unreachable"  # store errors outlasted the retries (try again later)


@dataclass(frozen=True)
class LoadedEpisode:
    """One episode of a snapshot: decoded (status OK) or the reason it could not be."""

    record: EpisodeRecord
    status: LoadStatus
    episode: Episode | None = None  # None unless OK and ReaderConfig.decode
    data: bytes | None = None  # the verified MCAP bytes when ReaderConfig.keep_bytes
    error: str = ""
    attempts: int = 0
    fetch_s: float = 0.0  # download + checks, including retries
    decode_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is LoadStatus.OK


@dataclass(frozen=True)
class ReaderConfig:
    bucket: str = EPISODES_BUCKET
    workers: int = 4  # parallel downloads (transport's S3 client keeps 4 pooled connections)
    prefetch: int = 8  # episodes in flight ahead of the consumer: bounds memory
    retries: int = 5  # attempts after the first one, for store errors
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    decode: bool = True  # read_episode the bytes (False: hand out verified bytes only)
    load_images: bool = True
    keep_bytes: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"ReaderConfig.workers must be >= 1, got {self.workers}")
        if self.prefetch < 1:
            raise ValueError(f"ReaderConfig.prefetch must be >= 1, got {self.prefetch}")
        if self.retries < 0:
            raise ValueError(f"ReaderConfig.retries must be >= 0, got {self.retries}")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"ReaderConfig backoff needs 0 < initial <= max, got {self.backoff_initial_s}, {self.backoff_max_s}"
            )
        if not self.decode and not self.keep_bytes:
            raise ValueError("ReaderConfig: with decode=False set keep_bytes=True, else nothing is handed out")


@dataclass(frozen=True)
class SnapshotDelta:
    """What one advance() brought: the records first committed in (previous, version]."""

    previous: int
    version: int
    records: tuple[EpisodeRecord, ...]
    info: SnapshotInfo | None = None  # of `version` (None for version 0)

    @property
    def changed(self) -> bool:
        return self.version != self.previous


def agree_version(local_version: int, allgather: Callable[[np.ndarray], Any]) -> int:
    """The version every host uses for this step: the minimum of all hosts' newest versions.

    `allgather` maps this host's int64 array of shape (1,) to all hosts' values (any shape);
    pass `jax.experimental.multihost_utils.process_allgather` on a multi-host pod.
    """
    if isinstance(local_version, bool) or not isinstance(local_version, int | np.integer) or local_version < 0:
        raise ValueError(f"local snapshot version must be an int >= 0, got {local_version!r}")
    gathered = np.asarray(allgather(np.array([local_version], np.int64))).reshape(-1)
    if gathered.size == 0:
        raise ValueError("allgather returned no versions")
    if not np.issubdtype(gathered.dtype, np.integer) or int(gathered.min()) < 0:
        raise ValueError(f"allgather returned invalid versions {gathered.tolist()}")
    return int(gathered.min())


class SnapshotReplayReader:
    """Bound to one committed snapshot version; loads episodes of that version and advances between steps.

    Thread-safety: advance()/bind() from one thread (the training loop); load() generators may
    run in another (e.g. a feeder thread filling the replay buffer).
    """

    def __init__(self, snapshots: SnapshotReader, s3, config: ReaderConfig | None = None, version: int = 0):
        self.snapshots = snapshots
        self.s3 = s3
        self.config = config or ReaderConfig()
        self._version = 0
        self._failures: dict[str, LoadedEpisode] = {}
        self._failures_lock = threading.Lock()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="lwd-replay-fetch")
        if version:
            self.bind(version)

    @classmethod
    def open(
        cls, db_path: str | Path, s3: S3Endpoint, config: ReaderConfig | None = None, version: int = 0
    ) -> SnapshotReplayReader:
        """A reader over a Coordinator's SQLite file (read-only) and the episodes bucket."""
        return cls(SqliteSnapshotReader(db_path), make_s3_client(s3), config, version)

    # --- binding --------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The bound snapshot version (0 = none yet)."""
        return self._version

    def newest_version(self) -> int:
        return self.snapshots.current_version()

    def bind(self, version: int) -> list[EpisodeRecord]:
        """Bind to a committed version (any, older ones too) and return all its episodes."""
        records = self._checked_snapshot(version)
        self._version = version
        return records

    def records(self) -> list[EpisodeRecord]:
        """All episodes of the bound version, in commit order."""
        return self.snapshots.get_snapshot(self._version) if self._version else []

    def advance(self, target: int | None = None, allgather: Callable[[np.ndarray], Any] | None = None) -> SnapshotDelta:
        """Move to `target` (default: the newest committed version) and return only the new episodes.

        With `allgather`, all hosts move to the minimum of their targets (see agree_version), so
        they train on the same snapshot. A target at or below the bound version changes nothing.
        """
        if target is None:
            target = self.snapshots.current_version()
        if allgather is not None:
            target = agree_version(target, allgather)
        previous = self._version
        if isinstance(target, bool) or not isinstance(target, int | np.integer) or target < 0:
            raise ValueError(f"snapshot version must be an int >= 0, got {target!r}")
        target = int(target)
        if target <= previous:
            info = self.snapshots.snapshot_info(previous) if previous else None
            return SnapshotDelta(previous, previous, (), info)
        try:
            info = self.snapshots.snapshot_info(target)
        except KeyError as exc:
            newest = self.snapshots.current_version()
            raise ValueError(f"snapshot version {target} is not committed (newest is {newest})") from exc
        records = tuple(self.snapshots.get_delta(previous, target))
        self._version = target
        return SnapshotDelta(previous, target, records, info)

    def _checked_snapshot(self, version: int) -> list[EpisodeRecord]:
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"snapshot version must be an int >= 0, got {version!r}")
        if version == 0:
            return []
        try:
            return self.snapshots.get_snapshot(version)
        except KeyError as exc:
            newest = self.snapshots.current_version()
            raise ValueError(f"snapshot version {version} is not committed (newest is {newest})") from exc

    # --- loading --------------------------------------------------------------------------
    def load(self, records: Iterable[EpisodeRecord]) -> Iterator[LoadedEpisode]:
        """Yield each record's episode in the given order, fetching up to `prefetch` ahead in parallel."""
        if self._closed.is_set():
            raise RuntimeError("replay reader is closed")
        pending: deque[Future[LoadedEpisode]] = deque()
        source = iter(records)
        try:
            for rec in source:
                pending.append(self._pool.submit(self._fetch, rec))
                if len(pending) >= self.config.prefetch:
                    break
            while pending:
                item = pending.popleft().result()
                nxt = next(source, None)
                if nxt is not None:
                    pending.append(self._pool.submit(self._fetch, nxt))
                self._note(item)
                yield item
        finally:  # consumer stopped early (or closed): do not leave downloads running for nobody
            for fut in pending:
                fut.cancel()

    def load_version(self) -> Iterator[LoadedEpisode]:
        """All episodes of the bound version (e.g. to fill a fresh buffer)."""
        return self.load(self.records())

    @property
    def failures(self) -> dict[str, LoadedEpisode]:
        """episode_id -> the last failed attempt, for episodes not loaded successfully since."""
        with self._failures_lock:
            return dict(self._failures)

    def retry_failed(self) -> Iterator[LoadedEpisode]:
        return self.load([f.record for f in self.failures.values()])

    def _note(self, item: LoadedEpisode) -> None:
        with self._failures_lock:
            if item.ok:
                self._failures.pop(item.record.episode_id, None)
            else:
                self._failures[item.record.episode_id] = item
                log.warning("replay: %s %s: %s", item.record.episode_id, item.status.value, item.error)

    def _fetch(self, rec: EpisodeRecord) -> LoadedEpisode:
        from minio.error import S3Error

        cfg = self.config
        t0 = time.perf_counter()
        delay = cfg.backoff_initial_s
        attempts = mismatches = 0
        error = ""
        while True:
            attempts += 1
            try:
                data = self._download(rec.key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return self._failed(rec, LoadStatus.MISSING, f"object {cfg.bucket}/{rec.key} missing", attempts, t0)
                error = f"{exc.code}: {exc.message}"
            except Exception as exc:  # connection refused/reset, timeouts, 5xx: the store, not the episode
                error = f"{type(exc).__name__}: {exc}"
            else:
                digest = hashlib.sha256(data).hexdigest()
                if len(data) == rec.size and digest == rec.sha256:
                    return self._decode(rec, data, attempts, time.perf_counter() - t0)
                mismatches += 1
                error = (
                    f"got {len(data)} bytes hashing to {digest[:16]}…, record says {rec.size} bytes {rec.sha256[:16]}…"
                )
                if mismatches >= 2:  # the same wrong bytes twice: not a torn read
                    return self._failed(rec, LoadStatus.CORRUPT, f"payload mismatch: {error}", attempts, t0)
            if attempts > cfg.retries or self._closed.is_set():
                return self._failed(rec, LoadStatus.UNREACHABLE, f"after {attempts} attempts: {error}", attempts, t0)
            if self._closed.wait(delay * random.uniform(0.5, 1.0)):
                return self._failed(rec, LoadStatus.UNREACHABLE, f"reader closed: {error}", attempts, t0)
            delay = min(delay * 2, cfg.backoff_max_s)

    def _download(self, key: str) -> bytes:
        resp = self.s3.get_object(self.config.bucket, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def _decode(self, rec: EpisodeRecord, data: bytes, attempts: int, fetch_s: float) -> LoadedEpisode:
        keep = data if self.config.keep_bytes else None
        if not self.config.decode:
            return LoadedEpisode(rec, LoadStatus.OK, None, keep, "", attempts, fetch_s)
        t0 = time.perf_counter()
        try:
            episode = read_episode(data, load_images=self.config.load_images)
        except EpisodeFormatError as exc:
            return LoadedEpisode(
                rec, LoadStatus.CORRUPT, None, None, f"undecodable: {exc}", attempts, fetch_s, time.perf_counter() - t0
            )
        decode_s = time.perf_counter() - t0
        start = episode.start
        if start.episode_id != rec.episode_id or start.robot_id != rec.robot_id:
            error = f"file holds {start.robot_id}/{start.episode_id}, record says {rec.robot_id}/{rec.episode_id}"
            return LoadedEpisode(rec, LoadStatus.CORRUPT, None, None, error, attempts, fetch_s, decode_s)
        return LoadedEpisode(rec, LoadStatus.OK, episode, keep, "", attempts, fetch_s, decode_s)

    @staticmethod
    def _failed(rec: EpisodeRecord, status: LoadStatus, error: str, attempts: int, t0: float) -> LoadedEpisode:
        return LoadedEpisode(rec, status, error=error, attempts=attempts, fetch_s=time.perf_counter() - t0)

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop retries, wait for running downloads, release the database handle."""
        self._closed.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.snapshots.close()

    def __enter__(self) -> SnapshotReplayReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def feed_buffer(
    buffer, items: Iterable[LoadedEpisode], convert: Callable[[Episode], Any] | None = None
) -> tuple[int, list[LoadedEpisode]]:
    """Add each decoded episode to a replay buffer (`buffer.add_episode(convert(episode))`).

    `convert` defaults to lwd_learner.dataset.from_episode. Returns (transitions added, the items
    that failed to load or convert); failures are reported, never raised.
    """
    if convert is None:
        from lwd_learner.dataset import from_episode as convert
    added, failed = 0, []
    for item in items:
        if not item.ok or item.episode is None:
            failed.append(item)
            continue
        try:
            added += buffer.add_episode(convert(item.episode))
        except ValueError as exc:  # DatasetError and shape mismatches: this episode, not the loop
            failed.append(LoadedEpisode(item.record, LoadStatus.CORRUPT, error=f"convert: {exc}"))
    return added, failed


class SnapshotWatcher:
    """Follows the Coordinator's retained snapshot announcements (MqttTopics.snapshots()).

    Only a wake-up: the version it reports is committed, but the episode list always comes from
    the snapshot database. A learner without MQTT can poll `newest_version()` instead.
    """

    def __init__(self, mqtt: MqttEndpoint):
        self._cv = threading.Condition()
        self._version = 0
        self._info: dict[str, Any] = {}
        self.errors = 0
        self._client = make_mqtt_client(mqtt)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._mqtt = mqtt
        self._started = False

    def start(self) -> SnapshotWatcher:
        start_mqtt(self._client, self._mqtt)
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            stop_mqtt(self._client)
            self._started = False

    @property
    def version(self) -> int:
        return self._version

    def wait_newer(self, than: int, timeout_s: float) -> int:
        """Block until an announced version > `than` (returns it) or the timeout (returns the latest seen)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._version <= than:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return self._version

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(MqttTopics.snapshots(), qos=MqttTopics.QOS)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            body = json.loads(bytes(msg.payload))
            version = body["version"]
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise ValueError(f"bad version {version!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self.errors += 1
            log.warning("ignoring malformed snapshot announcement: %s", exc)
            return
        with self._cv:
            if version > self._version:  # a restarted broker may replay an older retained message
                self._version = version
                self._info = body
                self._cv.notify_all()
