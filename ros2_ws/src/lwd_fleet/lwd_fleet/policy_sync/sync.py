"""PolicySync: follow the signed policy orders for this robot and prepare each new version for a swap.

Inputs are two retained MQTT topics: the fleet order and this robot's pin (a pin overrides the
fleet order until an admin clears it). For the order in effect it

  1. checks the order: Ed25519 signature by a trusted key, meant for this topic and robot,
     ``seq`` not older than the last order accepted from that topic (replays), and a version
     below the current one only through a "rollback" order;
  2. downloads the manifest (must hash to the order's ``manifest_sha256``) and checks its own
     signature, the tensor I/O contract and this robot's joints and horizon, then the files
     (size-capped) into ``<cache>/.tmp-*``;
  3. verifies every file's sha256 (``open_artifact``, once), builds the engine for the configured
     backend and validates it on the reference I/O;
  4. renames the folder to ``<cache>/v%06d`` and reports state "ready" with ``pending_version``.

The controller swaps the pending version in at its next episode boundary and reports what it
runs (``note_active``). Any refusal leaves the current policy untouched and is reported with the
reason (state "rejected", ``rejected_version``/``rejected_reason`` on MQTT). Store outages are
retried with exponential backoff; MQTT connects in the background and keeps reconnecting, so
a robot that boots before the broker still syncs once it is up. Nothing here blocks a caller:
all work runs on one background thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lwd_fleet.inference.artifact import artifact_dir
from lwd_fleet.inference.select import Environment, probe_environment
from lwd_fleet.policy_sync.engine import EngineSettings, build_and_validate
from lwd_fleet.policy_sync.fetch import ArtifactRejectedError, StoreUnavailableError, fetch_files, fetch_manifest
from lwd_fleet.policy_sync.state import SyncState
from lwd_protocol.announce import (
    FLEET_TARGET,
    MAX_STATUS_TEXT,
    AnnouncementError,
    PolicyAnnouncement,
    RobotPolicyStatus,
)
from lwd_protocol.manifest import ManifestError, PolicyManifest
from lwd_protocol.names import MqttTopics, validate_robot_id
from lwd_protocol.policy_io import check_io_contract
from lwd_protocol.robot_spec import CHUNK_HORIZON, JOINT_NAMES
from lwd_protocol.signing import verify_announcement, verify_manifest
from lwd_protocol.store import MANIFEST_NAME, POLICIES_BUCKET
from lwd_protocol.transport import MqttEndpoint, S3Endpoint, make_mqtt_client, make_s3_client, start_mqtt, stop_mqtt

log = logging.getLogger(__name__)

BUSY_PHASES = ("downloading", "building", "validating")


@dataclass(frozen=True)
class PolicySyncConfig:
    robot_id: str
    cache_dir: Path  # the controller loads <cache_dir>/v%06d
    mqtt: MqttEndpoint
    s3: S3Endpoint
    trusted_keys: Mapping[str, Ed25519PublicKey]  # key id -> public key (lwd_protocol.signing.load_trusted_keys)
    bucket: str = POLICIES_BUCKET
    joint_names: tuple[str, ...] = JOINT_NAMES
    horizon: int = CHUNK_HORIZON
    backend: str = "auto"  # auto | tensorrt | onnxruntime-cuda | onnxruntime-cpu
    trt_cache_dir: Path | None = None  # share with the controller
    ort_threads: int | None = 1
    max_artifact_bytes: int = 4 * 1024**3
    keep_versions: int = 3  # cached versions kept besides the current and the active one
    retry_initial_s: float = 1.0
    retry_max_s: float = 60.0
    status_interval_s: float = 10.0  # MQTT status heartbeat (also sent on every change)
    settle_s: float = 0.2  # after (re)connecting, wait this long for both retained orders before acting


@dataclass
class _Retry:
    key: tuple[str, int, str]
    attempts: int = 0
    next_try: float = 0.0


@dataclass
class SyncTiming:
    """Per accepted order: when the robot received it and when it was ready (time.monotonic())."""

    version: int
    received: float
    ready: float = 0.0
    engine_backend: str = ""
    reference_error: float = 0.0

    @property
    def receive_to_ready_s(self) -> float:
        return self.ready - self.received


@dataclass
class _Status:
    phase: str = "idle"
    message: str = ""
    active_version: int = 0
    engine_backend: str = ""
    last_swap_ns: int = 0
    rejected_version: int = 0
    rejected_reason: str = ""
    history: list[RobotPolicyStatus] = field(default_factory=list)


class _SupersededError(Exception):
    """A newer order arrived while this one was being prepared: drop it, handle the newer one."""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_STATUS_TEXT else text[: MAX_STATUS_TEXT - 1] + "…"


class PolicySync:
    """Start with start(), stop with stop(). `status()` and `note_active()` are safe from any thread."""

    def __init__(
        self,
        config: PolicySyncConfig,
        on_status: Callable[[RobotPolicyStatus], None] | None = None,
        env: Environment | None = None,
    ):
        self.config = config
        self.robot_id = validate_robot_id(config.robot_id)
        if not config.trusted_keys:
            raise ValueError("policy sync needs at least one trusted public key: every policy would be refused")
        self.cache_dir = Path(config.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.topics = {MqttTopics.policy_fleet(): "fleet", MqttTopics.policy_robot(self.robot_id): "robot"}
        self.status_topic = MqttTopics.robot_status(self.robot_id)
        self.on_status = on_status
        self._env = env
        self._engine = EngineSettings(
            preference=config.backend,
            joint_names=tuple(config.joint_names),
            horizon=config.horizon,
            trt_cache_dir=config.trt_cache_dir,
            ort_threads=config.ort_threads,
        )
        self._s3 = make_s3_client(config.s3)
        self._mqtt = make_mqtt_client(config.mqtt)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_message = self._on_message
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._orders: dict[str, PolicyAnnouncement | None] = {"fleet": None, "robot": None}
        self._received: dict[tuple[str, int, str], float] = {}
        # the order handled last (accepted or refused): a re-delivered retained copy of it is skipped,
        # while any other order -- a replay of an older one included -- is judged again
        self._last_key: tuple[str, int, str] | None = None
        self._settle_until = 0.0
        self._retry: _Retry | None = None
        self._s = _Status()
        self.state = SyncState.load(self.cache_dir, self.cached_versions())
        if self.state.current_version:  # never offered before it is re-verified (_restore_cached)
            self._s.phase = "validating"
            self._s.message = f"re-verifying cached v{self.state.current_version}"
        self.timings: list[SyncTiming] = []
        self.connected = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> PolicySync:
        self._stop.clear()
        start_mqtt(self._mqtt, self.config.mqtt)  # background connect + reconnect: never blocks
        self._thread = threading.Thread(target=self._run, name=f"lwd-policy-sync-{self.robot_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        stop_mqtt(self._mqtt)

    # --- queries and controller feedback -------------------------------------------------------------
    def status(self) -> RobotPolicyStatus:
        with self._lock:
            s = self._s
            current = self.state.current_version
            pending = current if current and current != s.active_version else 0
            phase = s.phase
            if phase in ("idle", "ready"):
                phase = "ready" if pending else "idle"
            return RobotPolicyStatus(
                robot_id=self.robot_id,
                state=phase,
                active_version=s.active_version,
                pending_version=pending,
                engine_backend=s.engine_backend,
                message=_clip(s.message),
                updated_at_ns=time.time_ns(),
                rejected_version=s.rejected_version,
                rejected_reason=_clip(s.rejected_reason),
            )

    def history(self) -> list[RobotPolicyStatus]:
        """Every status reported so far (tests and diagnostics)."""
        with self._lock:
            return list(self._s.history)

    @property
    def last_swap_ns(self) -> int:
        return self._s.last_swap_ns

    def note_active(self, version: int, engine_backend: str = "", swap_time_ns: int = 0) -> None:
        """The controller reports the version it runs (0 = none); clears `pending` once it swapped."""
        with self._lock:
            s = self._s
            changed = (version, swap_time_ns) != (s.active_version, s.last_swap_ns)
            s.active_version = int(version)
            s.last_swap_ns = int(swap_time_ns)
            if engine_backend:
                s.engine_backend = engine_backend
            if changed and s.phase in ("idle", "ready") and version == self.state.current_version:
                s.message = f"running v{version}"
        if changed:
            self._emit()

    def cached_versions(self) -> list[int]:
        out = []
        for p in self.cache_dir.glob("v*"):
            if p.is_dir() and len(p.name) == 7 and p.name[1:].isdigit():
                out.append(int(p.name[1:]))
        return sorted(out)

    # --- MQTT callbacks (paho network thread) ---------------------------------------------------------
    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:  # e.g. bad credentials: paho keeps retrying; say why on ROS meanwhile
            with self._lock:
                phase = self._s.phase
            self._set_phase(phase, f"broker refused the connection: {reason_code}")
            return
        with self._lock:  # let both retained orders arrive before acting on either
            self._settle_until = time.monotonic() + self.config.settle_s
        client.subscribe([(topic, MqttTopics.QOS) for topic in self.topics])
        self.connected.set()
        self._publish_mqtt(self.status())

    def _on_message(self, _client, _userdata, msg) -> None:
        source = self.topics.get(msg.topic)
        if source is None:
            return
        payload = bytes(msg.payload)
        if not payload:  # retained order cleared: a pin removed means "follow the fleet again"
            with self._lock:
                self._orders[source] = None
                if self.state.clear(source):
                    self.state.save(self.cache_dir)
            log.info("policy sync: %s order cleared", source)
            self._wake.set()
            return
        try:
            ann = PolicyAnnouncement.from_json(payload)
        except AnnouncementError as exc:
            self._reject(0, f"unreadable order on the {source} topic: {exc}")
            return
        with self._lock:
            self._orders[source] = ann
            self._received.setdefault((source, ann.seq, ann.manifest_sha256), time.monotonic())
            if self._authentic(source, ann) and self.state.observe(source, ann.seq, ann.manifest_sha256):
                self.state.save(self.cache_dir)  # raise the replay floor even if a pin hides this order
        self._wake.set()

    def _authentic(self, source: str, ann: PolicyAnnouncement) -> bool:
        try:
            verify_announcement(ann, self.config.trusted_keys)
        except AnnouncementError:
            return False
        return ann.target == (FLEET_TARGET if source == "fleet" else self.robot_id)

    # --- worker ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        self._sweep_temp()
        self._probe_engines()
        self._restore_cached()
        next_beat = time.monotonic() + self.config.status_interval_s
        while not self._stop.is_set():
            self._wake.clear()
            job = self._next_job()
            if job is not None:
                try:
                    self._process(*job)
                except Exception:  # never let the sync thread die; _process reports what it can
                    log.exception("policy sync: unexpected error")
                continue
            now = time.monotonic()
            if now >= next_beat:
                self._publish_mqtt(self.status())
                next_beat = now + self.config.status_interval_s
            wait = next_beat - now
            if self._retry is not None:
                wait = min(wait, max(0.0, self._retry.next_try - now))
            if self._settle_until > now:
                wait = min(wait, self._settle_until - now)
            self._wake.wait(max(0.01, wait))

    def _effective(self) -> tuple[str, PolicyAnnouncement] | None:
        with self._lock:
            for source in ("robot", "fleet"):
                ann = self._orders[source]
                if ann is not None:
                    return source, ann
        return None

    def _next_job(self) -> tuple[str, PolicyAnnouncement, tuple[str, int, str]] | None:
        eff = self._effective()
        if eff is None:
            return None
        source, ann = eff
        key = (source, ann.seq, ann.manifest_sha256)
        with self._lock:
            if key == self._last_key or time.monotonic() < self._settle_until:
                return None
            if self._retry is not None and self._retry.key == key and time.monotonic() < self._retry.next_try:
                return None
        return source, ann, key

    def _check_current(self, key: tuple[str, int, str]) -> None:
        eff = self._effective()
        if eff is None or (eff[0], eff[1].seq, eff[1].manifest_sha256) != key:
            raise _SupersededError()

    def _process(self, source: str, ann: PolicyAnnouncement, key: tuple[str, int, str]) -> None:
        try:
            timing = self._apply(source, ann, key)
        except _SupersededError:
            log.info("policy sync: order for v%d superseded while preparing it", ann.version)
            return
        except StoreUnavailableError as exc:
            with self._lock:
                retry = self._retry if self._retry is not None and self._retry.key == key else _Retry(key)
                retry.attempts += 1
                delay = min(self.config.retry_max_s, self.config.retry_initial_s * 2 ** (retry.attempts - 1))
                delay *= random.uniform(0.5, 1.0)  # robots don't retry in lockstep
                retry.next_try = time.monotonic() + delay
                self._retry = retry
            self._set_phase("downloading", f"v{ann.version}: {exc}; retry {retry.attempts} in {delay:.1f} s")
            return
        except (ArtifactRejectedError, ManifestError, AnnouncementError) as exc:
            self._finish(key)
            self._reject(ann.version, str(exc))
            return
        except Exception as exc:  # engine build/validation errors from onnxruntime/TensorRT, I/O errors
            self._finish(key)
            self._reject(ann.version, f"{type(exc).__name__}: {exc}")
            return
        self._finish(key)
        if timing is not None:
            self.timings.append(timing)

    def _finish(self, key: tuple[str, int, str]) -> None:
        with self._lock:
            self._last_key = key
            self._received.pop(key, None)
            if self._retry is not None and self._retry.key == key:
                self._retry = None

    def _apply(self, source: str, ann: PolicyAnnouncement, key: tuple[str, int, str]) -> SyncTiming | None:
        cfg, st = self.config, self.state
        verify_announcement(ann, cfg.trusted_keys)
        expected_target = FLEET_TARGET if source == "fleet" else self.robot_id
        if ann.target != expected_target:
            raise ArtifactRejectedError(f"order targets {ann.target!r} but arrived on {self.robot_id}'s {source} topic")
        with self._lock:
            replay = st.replay_problem(source, ann.seq, ann.manifest_sha256)
        if replay is not None:
            raise ArtifactRejectedError(replay)
        current = st.current_version
        if ann.version == current and current:
            if st.current_manifest_sha256 and ann.manifest_sha256 != st.current_manifest_sha256:
                raise ArtifactRejectedError(f"v{current} is already installed with a different manifest")
            if artifact_dir(self.cache_dir, current).is_dir():
                with self._lock:
                    st.accept(current, ann.manifest_sha256)
                    st.save(self.cache_dir)
                self._set_phase("ready", f"v{current} already prepared ({ann.kind} order seq {ann.seq})")
                return None
        if ann.kind == "publish" and ann.version < current:
            raise ArtifactRejectedError(
                f"version rollback refused: a publish order for v{ann.version} is below the current v{current}; "
                "only a signed rollback order may lower the version"
            )
        received = self._received.get(key, time.monotonic())
        self._set_phase("downloading", f"{ann.kind} v{ann.version}: fetching the manifest")
        manifest, raw = fetch_manifest(self._s3, cfg.bucket, ann.version, ann.manifest_sha256)
        self._check_manifest(manifest)
        final = artifact_dir(self.cache_dir, ann.version)
        tmp: Path | None = None
        try:
            if self._reusable(final, raw):
                folder = final
            else:
                tmp = Path(tempfile.mkdtemp(prefix=f".tmp-v{ann.version:06d}-", dir=self.cache_dir))
                (tmp / MANIFEST_NAME).write_bytes(raw)
                self._set_phase("downloading", f"{ann.kind} v{ann.version}: downloading {len(manifest.files)} files")
                fetch_files(self._s3, cfg.bucket, manifest, tmp, cfg.max_artifact_bytes)
                folder = tmp
            self._check_current(key)
            check = build_and_validate(
                folder,
                ann.version,
                self._engine,
                env=self._environment(),
                on_stage=lambda stage: self._set_phase(stage, f"{ann.kind} v{ann.version}: {stage} the engine"),
            )
            self._check_current(key)
            if tmp is not None:
                self._install(tmp, final)
                tmp = None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        with self._lock:
            st.accept(ann.version, ann.manifest_sha256)
            st.save(self.cache_dir)
            self._s.engine_backend = check.backend
        self._set_phase(
            "ready",
            f"v{ann.version} ready on {check.backend} (reference error {check.reference_error:.2g}, "
            f"engine {check.build_s:.2f} s): {check.reason}",
        )
        self._prune()
        return SyncTiming(ann.version, received, time.monotonic(), check.backend, check.reference_error)

    def _check_manifest(self, manifest: PolicyManifest) -> None:
        verify_manifest(manifest, self.config.trusted_keys)
        check_io_contract(manifest)
        manifest.check_compatible(self.config.joint_names, self.config.horizon)
        if not manifest.reference_io_file:
            raise ArtifactRejectedError(f"v{manifest.version} ships no reference I/O: its engine cannot be validated")

    def _reusable(self, folder: Path, raw_manifest: bytes) -> bool:
        """A cached folder holding exactly this manifest and intact files needs no download."""
        path = folder / MANIFEST_NAME
        try:
            if not path.is_file() or path.read_bytes() != raw_manifest:
                return False
            PolicyManifest.from_json(raw_manifest).verify_files(folder)
        except (OSError, ManifestError) as exc:
            log.warning("policy sync: cached %s is not reusable: %s", folder.name, exc)
            return False
        return True

    def _install(self, tmp: Path, final: Path) -> None:
        """Rename the verified folder into place; a stale folder of that version is moved aside first."""
        old = None
        if final.exists():
            old = final.with_name(f".old-{final.name}-{time.time_ns()}")
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _prune(self) -> None:
        with self._lock:
            keep = {self.state.current_version, self._s.active_version}
        versions = self.cached_versions()
        keep.update(sorted(versions)[-self.config.keep_versions :] if self.config.keep_versions > 0 else [])
        for v in versions:
            if v not in keep:
                shutil.rmtree(artifact_dir(self.cache_dir, v), ignore_errors=True)

    def _sweep_temp(self) -> None:
        for p in self.cache_dir.glob(".tmp-v*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.cache_dir.glob(".old-v*"):
            shutil.rmtree(p, ignore_errors=True)

    def _environment(self) -> Environment:
        if self._env is None:
            self._env = probe_environment()
        return self._env

    def _probe_engines(self) -> None:
        """Probe (and so import) the inference runtimes now, not when the first order arrives.

        A one-off ~25 ms of CPU (onnxruntime's import; TensorRT's where installed) that, with a
        fleet's robots all preparing the same order at once, added ~0.3 s to the first version's
        time to ready in the latency benchmark. A failure here is reported by that first order.
        """
        try:
            self._environment()
        except Exception as exc:
            log.warning("policy sync: probing the inference engines failed: %s", exc)

    def _restore_cached(self) -> None:
        """After a restart, re-verify the version we last prepared so the controller can load it offline."""
        st = self.state
        version = st.current_version
        if not version:
            return
        folder = artifact_dir(self.cache_dir, version)
        try:
            raw = (folder / MANIFEST_NAME).read_bytes()
            digest = hashlib.sha256(raw).hexdigest()
            if st.current_manifest_sha256 and digest != st.current_manifest_sha256:
                raise ArtifactRejectedError(f"manifest changed on disk (sha256 {digest[:12]}…)")
            manifest = PolicyManifest.from_json(raw)
            self._check_manifest(manifest)
            self._set_phase("validating", f"re-verifying cached v{version}")
            check = build_and_validate(folder, version, self._engine, env=self._environment())
        except Exception as exc:
            with self._lock:
                st.current_version, st.current_manifest_sha256 = 0, ""
                st.save(self.cache_dir)
            with contextlib.suppress(OSError):
                if folder.exists():
                    folder.rename(folder.with_name(f".old-{folder.name}-{time.time_ns()}"))
            self._reject(version, f"cached v{version} failed re-verification: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            st.current_manifest_sha256 = digest
            st.save(self.cache_dir)
            self._s.engine_backend = check.backend
        self._set_phase("ready", f"cached v{version} re-verified on {check.backend}")

    # --- status ------------------------------------------------------------------------------------------
    def _set_phase(self, phase: str, message: str) -> None:
        with self._lock:
            self._s.phase, self._s.message = phase, message
        log.info("policy sync %s: %s: %s", self.robot_id, phase, message)
        self._emit()

    def _reject(self, version: int, reason: str) -> None:
        """Report a refusal; the current (and any pending) version stays as it was.

        Reported as "rejected" with the reason; if a validated version is still waiting for its
        swap, a second report goes straight back to "ready" so the controller keeps being offered it.
        """
        with self._lock:
            s = self._s
            s.rejected_version, s.rejected_reason = version, reason
            s.phase, s.message = "rejected", f"refused v{version}: {reason}"
            refused = self.status()
            after = None
            if refused.pending_version:
                s.phase = "ready"
                s.message = f"v{refused.pending_version} ready; refused v{version}: {reason}"
                after = self.status()
        log.warning("policy sync %s: refused v%d: %s", self.robot_id, version, reason)
        self._emit(refused)
        if after is not None:
            self._emit(after)

    def _emit(self, status: RobotPolicyStatus | None = None) -> None:
        status = status or self.status()
        with self._lock:
            self._s.history.append(status)
            if len(self._s.history) > 1000:
                del self._s.history[:500]
        if self.on_status is not None:
            try:
                self.on_status(status)
            except Exception:
                log.exception("policy sync: status callback failed")
        self._publish_mqtt(status)

    def _publish_mqtt(self, status: RobotPolicyStatus) -> None:
        if self._mqtt.is_connected():
            self._mqtt.publish(self.status_topic, status.to_json(), qos=MqttTopics.QOS, retain=True)
