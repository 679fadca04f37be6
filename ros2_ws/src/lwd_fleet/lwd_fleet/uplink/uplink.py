"""EpisodeUplink: spool -> S3 upload -> QoS1 announcement -> delete, surviving broker/store outages.

Order per episode: sha256 + upload under episode_key (same key on every retry, so idempotent),
then publish the EpisodeAnnouncement and wait for the broker's PUBACK, then delete the spool
file. A crash at any point leaves the file in the spool and a restart resends it; at worst the
Coordinator sees a duplicate, which it de-duplicates by episode_id. Files are deleted (not kept
in a sent/ dir) once acknowledged: the S3 object is the durable copy, and deleting is the only
retention policy that can never fill a robot's disk.

Nothing here blocks the recorder: work runs in `run_forever` on its own thread, each episode
has its own exponential backoff with jitter, and publishing is skipped while disconnected.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lwd_fleet.uplink.spool import Spool, SpoolEntry
from lwd_protocol.announce import EpisodeAnnouncement
from lwd_protocol.episode_io import EpisodeFormatError, read_episode
from lwd_protocol.names import MqttTopics, validate_robot_id
from lwd_protocol.store import EPISODES_BUCKET, episode_key
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, make_mqtt_client, make_s3_client, start_mqtt, stop_mqtt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UplinkConfig:
    robot_id: str
    spool_dir: Path
    mqtt: MqttEndpoint
    s3: S3Endpoint
    bucket: str = EPISODES_BUCKET
    max_spool_bytes: int = 20 * 1024**3
    poll_interval_s: float = 0.5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    puback_timeout_s: float = 10.0


@dataclass
class UplinkCounters:
    pending: int = 0
    uploaded: int = 0
    announced: int = 0
    failures: int = 0
    rejected: int = 0
    spool_bytes: int = 0
    spool_full: bool = False
    last_error: str = ""
    last_error_at_ns: int = 0

    def error(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        self.last_error_at_ns = time.time_ns()


@dataclass
class _Backoff:
    attempts: int = 0
    next_try: float = field(default_factory=time.monotonic)


class SpoolFullError(RuntimeError):
    pass


class EpisodeUplink:
    def __init__(self, config: UplinkConfig):
        self.config = config
        self.robot_id = validate_robot_id(config.robot_id)
        self.topic = MqttTopics.episodes(self.robot_id)
        self.spool = Spool(config.spool_dir)
        self.counters = UplinkCounters()
        self._s3 = make_s3_client(config.s3)
        self._mqtt = make_mqtt_client(config.mqtt)
        self._mqtt_started = False
        self._backoff: dict[str, _Backoff] = {}
        self._lock = threading.Lock()  # one step() at a time (drain from a test + run_forever)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the MQTT session to the broker is up (episodes still spool while it is not)."""
        return bool(self._mqtt.is_connected())

    def _ensure_mqtt(self) -> None:
        if not self._mqtt_started:
            start_mqtt(self._mqtt, self.config.mqtt)  # background connect + auto-reconnect
            self._mqtt_started = True

    def start(self) -> EpisodeUplink:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, args=(self._stop,), name="lwd-uplink", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._mqtt_started:
            stop_mqtt(self._mqtt)
            self._mqtt_started = False

    def run_forever(self, stop_event: threading.Event) -> None:
        self._ensure_mqtt()
        self.spool.sweep_orphans()
        while not stop_event.is_set():
            try:
                self.step()
            except Exception as exc:  # never let the uplink thread die
                self.counters.error(f"uplink step: {type(exc).__name__}: {exc}")
                log.exception("uplink step failed")
            stop_event.wait(self.config.poll_interval_s)

    def drain(self, timeout_s: float) -> bool:
        """Process in the caller's thread until the spool is empty (True) or the timeout passes (False)."""
        self._ensure_mqtt()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.step() == 0:
                return True
            time.sleep(min(0.05, self.config.poll_interval_s))
        return self.step() == 0

    # --- capacity ------------------------------------------------------------------------
    def has_capacity(self, extra_bytes: int = 0) -> bool:
        """The recorder asks before starting an episode; False means do not record (spool over limit)."""
        return self.spool.total_bytes() + extra_bytes <= self.config.max_spool_bytes

    def check_capacity(self, extra_bytes: int = 0) -> None:
        if not self.has_capacity(extra_bytes):
            raise SpoolFullError(
                f"spool {self.config.spool_dir} over its limit of {self.config.max_spool_bytes} bytes: "
                f"uploads are failing ({self.counters.last_error or 'no error recorded'})"
            )

    # --- one pass --------------------------------------------------------------------------
    def step(self) -> int:
        """Try every due episode once; return how many are still pending."""
        with self._lock:
            entries = self.spool.ready()
            self._update_spool_stats(len(entries))
            now = time.monotonic()
            for entry in entries:
                b = self._backoff.get(entry.episode_id)
                if b is not None and b.next_try > now:
                    continue
                try:
                    if self._send(entry):
                        self._backoff.pop(entry.episode_id, None)
                except Exception as exc:
                    self._failed(entry, f"{entry.episode_id}: {type(exc).__name__}: {exc}")
            remaining = self.spool.ready()
            self._update_spool_stats(len(remaining))
            return len(remaining)

    def _send(self, entry: SpoolEntry) -> bool:
        ann = self.spool.load_uploaded(entry)
        if ann is None:
            ann = self._upload(entry)
            if ann is None:
                return True  # rejected: nothing left to do for this file
        if not self._mqtt.is_connected():
            raise ConnectionError("MQTT broker not connected")
        info = self._mqtt.publish(self.topic, ann.to_json(), qos=MqttTopics.QOS)
        info.wait_for_publish(self.config.puback_timeout_s)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK within {self.config.puback_timeout_s:.0f} s")
        self.spool.remove(entry)
        self.counters.announced += 1
        return True

    def _upload(self, entry: SpoolEntry) -> EpisodeAnnouncement | None:
        try:
            episode = read_episode(entry.path, load_images=False)
            if episode.end is None or episode.start.robot_id != self.robot_id:
                raise EpisodeFormatError(f"incomplete or foreign episode (robot {episode.start.robot_id})")
            if episode.start.episode_id != entry.episode_id:
                raise EpisodeFormatError(f"file name says {entry.episode_id}, metadata {episode.start.episode_id}")
        except EpisodeFormatError as exc:
            dest = self.spool.reject(entry)
            self.counters.rejected += 1
            self.counters.error(f"rejected unreadable episode {entry.path.name} -> {dest}: {exc}")
            log.error(self.counters.last_error)
            return None
        digest = _sha256(entry.path)
        key = episode_key(self.robot_id, entry.episode_id)
        self._s3.fput_object(
            self.config.bucket, key, str(entry.path), content_type="application/x-mcap", metadata={"sha256": digest}
        )
        ann = EpisodeAnnouncement(
            episode_id=entry.episode_id,
            robot_id=self.robot_id,
            key=key,
            sha256=digest,
            size=entry.size,
            task=episode.start.task,
            outcome=episode.end.outcome.value,
            num_steps=episode.num_steps,
            committed_at_ns=entry.mtime_ns,
        )
        self.spool.mark_uploaded(entry, ann)
        self.counters.uploaded += 1
        return ann

    def _failed(self, entry: SpoolEntry, message: str) -> None:
        self.counters.error(message)
        b = self._backoff.setdefault(entry.episode_id, _Backoff())
        b.attempts += 1
        delay = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (b.attempts - 1))
        b.next_try = time.monotonic() + delay * random.uniform(0.5, 1.0)  # jitter: robots don't retry in lockstep
        log.warning("uplink retry %d for %s in <=%.1f s: %s", b.attempts, entry.episode_id, delay, message)

    def _update_spool_stats(self, pending: int) -> None:
        c = self.counters
        c.pending = pending
        c.spool_bytes = self.spool.total_bytes()
        full = c.spool_bytes > self.config.max_spool_bytes
        if full and not c.spool_full:
            log.error(
                "spool %s holds %d bytes > limit %d", self.config.spool_dir, c.spool_bytes, self.config.max_spool_bytes
            )
        c.spool_full = full


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
