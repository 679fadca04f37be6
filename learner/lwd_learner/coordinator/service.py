"""The Coordinator: the fleet's only singleton. MQTT announcements in, committed snapshot versions out.

Delivery: a persistent MQTT session (fixed client id, clean_session=False, QoS 1) keeps events
queued on the broker while we are down, and manual acks mean the broker forgets a message only
after its outcome (verified, duplicate or quarantined) is durably in the DB. A crash anywhere
before that gets the message redelivered; dedupe by episode_id makes redelivery harmless.
Store outages are transient: the message stays un-acked and is retried with backoff.

Commits happen right after each verified episode (so it is visible to learners at once) unless
a backlog of at least `batch_size` announcements is waiting (a replay after downtime): then they
are batched (N new episodes or T seconds since the oldest pending one). Every pending object is
re-stat'ed just before the commit, so no version references a missing object.

A QoS1 PUBACK is not durability: mosquitto persists its queues periodically, so a broker killed
right after acknowledging an announcement forgets it, and the robot has already deleted its
spool file. The sweep closes that gap: every `sweep_interval_s` the worker lists the episodes
bucket and verifies, from the object alone, every episode object older than `sweep_grace_s`
that is neither recorded nor quarantined. Together with the robots' retries this makes delivery
at-least-once end to end; dedupe by episode_id keeps it exactly-once in the snapshots.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lwd_learner.coordinator.records import AddResult, EpisodeRecord, QuarantineRecord, RobotStats, SnapshotInfo
from lwd_learner.coordinator.snapshot_store import SnapshotStore, SqliteSnapshotStore
from lwd_learner.coordinator.verifier import EpisodeVerifier, Quarantine, TransientError, VerifierConfig
from lwd_protocol.names import MqttTopics
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, make_mqtt_client, make_s3_client, start_mqtt, stop_mqtt
from lwd_protocol.version import PROTOCOL_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinatorConfig:
    mqtt: MqttEndpoint  # must have a fixed client_id and clean_session=False
    s3: S3Endpoint
    db_path: Path
    batch_size: int = 16  # commit when this many verified episodes are pending ...
    batch_interval_s: float = 5.0  # ... or when the oldest pending one waited this long
    max_batch: int = 1000
    commit_when_idle: bool = True  # commit at once unless >= batch_size announcements are waiting
    retry_initial_s: float = 0.5
    retry_max_s: float = 15.0
    sweep_interval_s: float | None = 30.0  # list the bucket for never-announced episodes; None = no sweep
    sweep_grace_s: float = 60.0  # only objects uploaded longer ago than this (their announcement had time)
    sweep_batch: int = 50  # objects verified per worker turn; the rest continue at the next turn
    verifier: VerifierConfig = field(default_factory=VerifierConfig)


@dataclass
class CoordinatorCounters:
    received: int = 0
    verified: int = 0
    duplicates: int = 0
    quarantined: int = 0
    transient_errors: int = 0
    commits: int = 0
    sweeps: int = 0
    recovered: int = 0  # episodes found by the sweep, never announced to us
    last_error: str = ""


@dataclass
class _Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int


class Coordinator:
    """Start with start(), stop with stop(); query methods are safe from any thread."""

    def __init__(self, config: CoordinatorConfig, store: SnapshotStore | None = None):
        if config.mqtt.clean_session or not config.mqtt.client_id:
            raise ValueError("the Coordinator needs a persistent MQTT session: fixed client_id, clean_session=False")
        self.config = config
        self.store: SnapshotStore = store or SqliteSnapshotStore(config.db_path)
        self.verifier = EpisodeVerifier(make_s3_client(config.s3), config.verifier)
        self.counters = CoordinatorCounters()
        self._inbox: queue.Queue[_Inbound] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush = threading.Event()
        self._republish = threading.Event()
        self._sweep_request = threading.Event()
        self._next_sweep = 0.0
        self._version_cv = threading.Condition()
        self._mqtt = make_mqtt_client(config.mqtt, manual_ack=True)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_message = self._on_message
        self._mqtt.on_subscribe = lambda *a: self.subscribed.set()
        self.subscribed = threading.Event()  # set once the broker granted the episodes subscription

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Coordinator:
        self._stop.clear()
        self._next_sweep = time.monotonic() + (self.config.sweep_interval_s or 0.0)
        self._thread = threading.Thread(target=self._run, name="lwd-coordinator", daemon=True)
        self._thread.start()
        start_mqtt(self._mqtt, self.config.mqtt)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop consuming; un-acked messages stay on the broker for the next run."""
        self._stop.set()
        stop_mqtt(self._mqtt)
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.store.close()

    # --- MQTT callbacks (paho network thread: never block here) -----------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.counters.last_error = f"MQTT connect refused: {reason_code}"
            return
        client.subscribe(MqttTopics.all_episodes(), qos=MqttTopics.QOS)
        self._republish.set()  # the retained snapshot message may have been lost with a broker crash

    def _on_message(self, client, userdata, msg) -> None:
        self._inbox.put(_Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    # --- worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout=0.1)
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    self._handle(item)
                self._maybe_commit()
                self._maybe_sweep()
                if self._republish.is_set():
                    self._republish.clear()
                    self._publish_current()
            except Exception as exc:  # keep the singleton alive; the message stays un-acked
                self.counters.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("coordinator worker error")
                self._stop.wait(self.config.retry_initial_s)

    def _handle(self, item: _Inbound) -> None:
        """Record one message, retrying store/DB failures with backoff; ack only once it is recorded."""
        self.counters.received += 1
        delay = self.config.retry_initial_s
        while not self._stop.is_set():
            try:
                self._record(item)
                break
            except Exception as exc:  # TransientError (object store) or a DB error: retry, never drop
                self.counters.transient_errors += 1
                self.counters.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("retrying %s in <=%.1f s: %s", item.topic, delay, self.counters.last_error)
                self._stop.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.config.retry_max_s)
        else:
            return  # stopping: not acked, the broker redelivers to the next run
        if item.qos > 0:
            self._mqtt.ack(item.mid, item.qos)

    def _record(self, item: _Inbound) -> None:
        """Verify and durably record the outcome; returns only when it is in the DB."""
        try:
            rec = self.verifier.verify(item.topic, item.payload)
        except Quarantine as q:
            self.store.add_quarantine(q.record)
            self.counters.quarantined += 1
            log.warning("quarantined %s: %s", q.record.episode_id or item.topic, q.record.reason)
            return
        self._add(rec, item.topic, item.payload[:512])

    def _add(self, rec: EpisodeRecord, topic: str, head: bytes) -> AddResult:
        result = self.store.add_episode(rec)
        if result is AddResult.NEW:
            self.counters.verified += 1
        elif result is AddResult.DUPLICATE:
            self.counters.duplicates += 1
        else:
            self.store.add_quarantine(
                QuarantineRecord(
                    "conflict: episode_id already recorded with different bytes",
                    topic,
                    rec.robot_id,
                    rec.episode_id,
                    rec.key,
                    head,
                    time.time_ns(),
                )
            )
            self.counters.quarantined += 1
        return result

    def _maybe_sweep(self) -> None:
        """Periodic passes run on schedule; continuations and requested passes wait for an empty inbox."""
        interval = self.config.sweep_interval_s
        due = bool(interval) and time.monotonic() >= self._next_sweep
        if not due and not (self._sweep_request.is_set() and self._inbox.empty()):
            return
        self._sweep_request.clear()
        self._next_sweep = time.monotonic() + (interval or 0.0)
        self.sweep()

    def sweep(self) -> int:
        """Record every old-enough episode object the DB does not know; returns how many were new.

        Runs in the worker thread (between messages), so it never races the announcement path; after
        `sweep_batch` verifications it yields to waiting messages and continues at the next turn.
        A store outage ends the sweep early; the next one picks up where this left off.
        """
        self.counters.sweeps += 1
        cutoff_ns = time.time_ns() - int(self.config.sweep_grace_s * 1e9)
        try:
            objects = self.verifier.list_episode_objects(cutoff_ns)
        except TransientError as exc:
            self.counters.transient_errors += 1
            self.counters.last_error = f"sweep: {exc}"
            return 0
        unknown = self.store.unknown_keys([key for key, _ in objects])
        found = checked = 0
        for key, uploaded_ns in objects:
            if key not in unknown or self._stop.is_set():
                continue
            if checked >= self.config.sweep_batch:
                self._sweep_request.set()  # more to do: continue after the messages waiting now
                break
            checked += 1
            try:
                rec = self.verifier.verify_object(key, uploaded_ns)
            except Quarantine as q:
                self.store.add_quarantine(q.record)
                self.counters.quarantined += 1
                log.warning("sweep quarantined %s: %s", key, q.record.reason)
                continue
            except TransientError as exc:
                self.counters.transient_errors += 1
                self.counters.last_error = f"sweep: {exc}"
                break
            if rec is not None and self._add(rec, "", b"") is AddResult.NEW:
                found += 1
                self.counters.recovered += 1
                log.warning("sweep recovered never-announced episode %s", key)
        return found

    def _maybe_commit(self) -> SnapshotInfo | None:
        pending = self.store.pending_episodes()
        if not pending:
            self._flush.clear()
            return None
        oldest_age = (time.time_ns() - pending[0].verified_at_ns) / 1e9
        idle = self.config.commit_when_idle and self._inbox.qsize() < self.config.batch_size
        if not (
            idle
            or self._flush.is_set()
            or len(pending) >= self.config.batch_size
            or oldest_age >= self.config.batch_interval_s
        ):
            return None
        batch = [p for p in pending[: self.config.max_batch] if self._still_present(p)]
        if not batch:
            return None
        info = self.store.commit_snapshot([p.episode_id for p in batch])
        self.counters.commits += 1
        self._flush.clear()
        log.info("committed snapshot v%d (+%d, %d episodes)", info.version, info.added, info.num_episodes)
        with self._version_cv:
            self._version_cv.notify_all()
        self._publish(info)
        return info

    def _still_present(self, rec: EpisodeRecord) -> bool:
        """Re-stat before commit: a vanished object is quarantined, a store outage raises (no commit)."""

        def bad(reason: str) -> QuarantineRecord:
            return QuarantineRecord(f"before commit: {reason}", "", rec.robot_id, rec.episode_id, rec.key)

        try:
            self.verifier.check_exists(rec.key, rec.size, rec.sha256, on_bad=bad)
        except Quarantine as q:
            self.store.drop_pending(rec.episode_id, q.record)
            self.counters.quarantined += 1
            return False
        return True

    def _publish_current(self) -> None:
        version = self.store.current_version()
        if version > 0:
            self._publish(self.store.snapshot_info(version))

    def _publish(self, info: SnapshotInfo) -> None:
        """Retained, so a learner that starts later still learns the newest version at once."""
        body = {
            "v": PROTOCOL_VERSION,
            "version": info.version,
            "parent": info.parent,
            "num_episodes": info.num_episodes,
            "added": info.added,
            "created_at_ns": info.created_at_ns,
        }
        self._mqtt.publish(MqttTopics.snapshots(), json.dumps(body), qos=MqttTopics.QOS, retain=True)

    # --- query API ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Ask the worker to commit whatever is pending now (tests, shutdown, operators)."""
        self._flush.set()

    def request_sweep(self) -> None:
        """Ask the worker to sweep the bucket at its next turn (operators, tests)."""
        self._sweep_request.set()

    def wait_for_version(self, version: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._version_cv:
            while self.store.current_version() < version:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._version_cv.wait(min(left, 0.2))
        return True

    def current_version(self) -> int:
        return self.store.current_version()

    def get_snapshot(self, version: int) -> list[EpisodeRecord]:
        return self.store.get_snapshot(version)

    def quarantined(self) -> list[QuarantineRecord]:
        return self.store.quarantined()

    def robot_stats(self) -> dict[str, RobotStats]:
        return self.store.robot_stats()
