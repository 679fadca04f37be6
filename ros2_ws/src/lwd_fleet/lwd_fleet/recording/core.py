"""The recorder's writer: a bounded queue in front of one thread that owns the episode file.

ROS callbacks only take references and call ``add_step`` (O(1), never blocks). The writer thread
turns each StepRecord into MCAP messages through lwd_protocol's EpisodeWriter (zstd chunks;
images passed through as CDR, or downscaled and JPEG/PNG-compressed here, off the control path),
keeps the per-episode statistics that go into the end record, and commits atomically. When the
queue holds ``queue_steps`` steps, new steps are dropped and counted (never a blocked callback);
recorded steps stay contiguous and the drop count goes into the episode's end note.

Write failures (disk full, quota, I/O error, file size limit) stop the episode with an error
naming the file and the OS error; the ``.partial`` file stays for start-up recovery. The spool
limit is checked while writing: an episode that would push the spool past ``max_spool_bytes``
or the disk under ``min_free_bytes`` is committed early with a note saying so, and the owner is
told through ``on_stopped`` so it stops recording until there is room again. None of this touches
the controller: the recorder is its own process and only ever listens to it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lwd_fleet.imaging import downscale, image_msg_to_numpy
from lwd_fleet.uplink.spool import Spool
from lwd_protocol.episode import ActionSource, EpisodeEnd, EpisodeStart, Outcome, episode_filename
from lwd_protocol.episode_io import IMAGE_FORMATS, EpisodeWriter
from lwd_protocol.robot_spec import JOINT_NAMES

IMAGE_TYPE = "sensor_msgs/msg/Image"
CONTROL_MODE_TYPE = "lwd_msgs/msg/ControlMode"


class RecorderError(RuntimeError):
    """Recording cannot go on (spool over its limit, disk full, write error); the message says why."""


@dataclass(frozen=True)
class RecorderConfig:
    robot_id: str
    spool_dir: Path
    max_spool_bytes: int = 20 * 1024**3
    min_free_bytes: int = 512 * 1024**2
    chunk_bytes: int = 1024 * 1024  # small chunks: a crash loses at most the chunk in memory
    queue_steps: int = 90  # 3 s at 30 Hz of buffered steps before drops
    # jpeg by default, as real recorders (LeRobot) store compressed video: raw 3x128x128 rgb8 at 30 Hz
    # is ~23 MB/min per robot even after zstd, all of it uploaded and hashed before the learner sees
    # the episode. "none" keeps exact pixels (CDR passthrough, no decode on the writer thread).
    image_compression: str = "jpeg"  # none | jpeg | png
    jpeg_quality: int = 90
    image_downscale: int = 1
    flush_period_s: float = 1.0
    stale_image_s: float = 0.2  # a frame older than this at its action's arrival counts as stale

    def __post_init__(self) -> None:
        if self.image_compression not in ("none", *IMAGE_FORMATS):
            raise ValueError(
                f"image_compression {self.image_compression!r} not one of none, {', '.join(IMAGE_FORMATS)}"
            )
        if self.image_downscale < 1:
            raise ValueError(f"image_downscale must be an integer >= 1, got {self.image_downscale}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1-100, got {self.jpeg_quality}")
        if self.queue_steps < 1 or self.chunk_bytes < 1024 or self.max_spool_bytes <= 0 or self.min_free_bytes < 0:
            raise ValueError("queue_steps >= 1, chunk_bytes >= 1024, max_spool_bytes > 0, min_free_bytes >= 0")

    @property
    def passthrough_images(self) -> bool:
        """Images can go to the file as the CDR bytes that arrived (no decode at all)."""
        return self.image_compression == "none" and self.image_downscale == 1


@dataclass
class Frame:
    """One camera frame: CDR bytes of a sensor_msgs/Image, or a message with Image fields."""

    data: Any
    stamp_ns: int
    received_mono: float


@dataclass
class StepRecord:
    """Everything recorded for one control tick: the executed action and the observation beside it."""

    position: np.ndarray  # executed joint targets (action_dim,)
    source: int
    policy_version: int
    stamp_ns: int
    received_mono: float
    joint_position: np.ndarray  # observation, in JOINT_NAMES order
    joint_velocity: np.ndarray | None
    joint_stamp_ns: int
    images: dict[str, Frame] = field(default_factory=dict)
    sim: dict[str, Any] | None = None  # fields of lwd_msgs/SimState
    controller_step: int = -1


@dataclass
class EpisodeStats:
    """What the end record says, computed from the steps actually written."""

    steps: int = 0
    intervention_steps: int = 0
    interventions: int = 0
    hold_steps: int = 0
    policy_versions: set[int] = field(default_factory=set)
    dropped_steps: int = 0
    stale_image_steps: int = 0
    action_gaps: int = 0  # controller step jumped by more than one between recorded actions
    subtasks_done: int = 0
    num_subtasks: int = 0
    last_stamp_ns: int = 0
    last_source: int = -1
    last_controller_step: int = -1
    bytes_written: int = 0


@dataclass
class _Start:
    start: EpisodeStart


@dataclass
class _End:
    outcome: Outcome
    note: str
    progress: tuple[int, int] | None  # (subtasks done, of) from the sim report that ended the episode


@dataclass
class _Mode:
    cdr: bytes
    stamp_ns: int


def cdr_header_stamp_ns(cdr: bytes) -> int:
    """Header stamp of a CDR-serialized message whose first field is std_msgs/Header."""
    if len(cdr) < 12:
        raise ValueError(f"CDR message of {len(cdr)} bytes has no header")
    little = cdr[1] in (0x01, 0x03)  # encapsulation: CDR_LE / PL_CDR_LE
    sec, nanosec = struct.unpack("<iI" if little else ">iI", cdr[4:12])
    return sec * 1_000_000_000 + nanosec


def joint_vector(names: Sequence[str], values: Sequence[float]) -> np.ndarray:
    """Reorder a JointState field into JOINT_NAMES order (names empty = already in that order)."""
    arr = np.asarray(values, np.float64)
    if not names:
        if arr.shape != (len(JOINT_NAMES),):
            raise ValueError(f"unnamed joint vector of {arr.shape[0]} values, expected {len(JOINT_NAMES)}")
        return arr
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in JOINT_NAMES if n not in index]
    if missing or len(arr) != len(names):
        raise ValueError(f"joint state lacks {missing} or has {len(arr)} values for {len(names)} names")
    return arr[[index[n] for n in JOINT_NAMES]]


class EpisodeRecorder:
    """Owns the writer thread; callers enqueue start/step/mode/end and never wait for the disk."""

    def __init__(
        self,
        config: RecorderConfig,
        log: Callable[[str, str], None] | None = None,
        on_committed: Callable[[EpisodeStart, EpisodeEnd, Path], None] | None = None,
        on_stopped: Callable[[EpisodeStart, str], None] | None = None,
    ) -> None:
        self.cfg = config
        self.spool = Spool(config.spool_dir)
        self._log = log or (lambda level, text: None)
        self._on_committed = on_committed or (lambda start, end, path: None)
        self._on_stopped = on_stopped or (lambda start, reason: None)
        self._items: collections.deque[Any] = collections.deque()
        self._pending_steps = 0
        self._cv = threading.Condition()
        self._stop = False
        self._writer: EpisodeWriter | None = None
        self._start: EpisodeStart | None = None
        self._stats = EpisodeStats()
        self._spool_bytes_at_start = 0
        self._last_flush = 0.0
        self._last_capacity_check = 0.0
        self.dropped_total = 0
        self.committed_total = 0
        self.last_error = ""
        self.busy = False  # True from start() until the episode's end is handled
        self._busy_item = False  # the writer thread is handling an item it already dequeued
        self._thread = threading.Thread(target=self._run, name="lwd-recorder-writer", daemon=True)
        self._thread.start()

    # --- producer side (any thread, never blocks) ---------------------------------------------
    def start(self, start: EpisodeStart) -> None:
        self.busy = True
        self._put(_Start(start))

    def add_step(self, record: StepRecord) -> bool:
        """Queue one step; False (and a drop counted) when the writer is `queue_steps` behind."""
        with self._cv:
            if self._pending_steps >= self.cfg.queue_steps:
                self.dropped_total += 1
                self._items.append("drop")  # keeps the per-episode drop count in order with the steps
                self._cv.notify()
                return False
            self._pending_steps += 1
            self._items.append(record)
            self._cv.notify()
            return True

    def add_mode(self, cdr: bytes, stamp_ns: int) -> None:
        self._put(_Mode(cdr, stamp_ns))

    def end(self, outcome: Outcome, note: str = "", progress: tuple[int, int] | None = None) -> None:
        """Commit the episode. ``progress`` = (subtasks done, of) when the outcome came with a final
        task report (the sim's success tick), which no recorded step carries: the episode ends on it."""
        self._put(_End(Outcome(outcome), note, progress))

    def _put(self, item: Any) -> None:
        with self._cv:
            self._items.append(item)
            self._cv.notify()

    @property
    def queue_depth(self) -> int:
        return self._pending_steps

    def capacity_problem(self) -> str:
        """Why a new episode must not start now ('' when there is room)."""
        used = self.spool.total_bytes()
        if used >= self.cfg.max_spool_bytes:
            return (
                f"spool {self.cfg.spool_dir} holds {used} bytes, at or over max_spool_bytes={self.cfg.max_spool_bytes}"
                " (is the uplink reaching the object store?)"
            )
        free = shutil.disk_usage(self.cfg.spool_dir).free
        if free < self.cfg.min_free_bytes:
            return f"disk of {self.cfg.spool_dir} has {free} bytes free, under min_free_bytes={self.cfg.min_free_bytes}"
        return ""

    def close(self, timeout_s: float = 30.0) -> bool:
        """Finish queued work (an open episode is committed by the caller's end() first) and stop."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every queued item is processed (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._cv:
                if not self._items and not self._busy_item:
                    return True
            time.sleep(0.01)
        return False

    # --- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._stop:
                    self._cv.wait(timeout=self.cfg.flush_period_s)
                    if not self._items:
                        self._maybe_flush()
                if not self._items and self._stop:
                    break
                item = self._items.popleft()
                if isinstance(item, StepRecord):
                    self._pending_steps -= 1
                self._busy_item = True
            try:
                self._handle(item)
            except Exception as exc:  # never let the writer thread die: report and drop the episode
                with contextlib.suppress(Exception):
                    self._fail(f"recorder writer: {type(exc).__name__}: {exc}")
            finally:
                self._busy_item = False
        if self._writer is not None:  # closed with an episode open: leave it for recovery
            self._writer.flush()
            self._writer.abandon()
            self._writer = None

    def _handle(self, item: Any) -> None:
        if isinstance(item, _Start):
            self._begin(item.start)
        elif isinstance(item, StepRecord):
            if self._writer is not None:
                self._write_step(item)
        elif item == "drop":
            if self._writer is not None:
                self._stats.dropped_steps += 1
        elif isinstance(item, _Mode):
            if self._writer is not None:
                step = max(self._stats.steps - 1, 0)
                self._guarded(
                    lambda: self._writer.write_raw("/control_mode", CONTROL_MODE_TYPE, item.cdr, step, item.stamp_ns)
                )
        elif isinstance(item, _End):
            if item.progress is not None:
                self._stats.subtasks_done, self._stats.num_subtasks = (int(v) for v in item.progress)
            self._finish(item.outcome, item.note)

    def _begin(self, start: EpisodeStart) -> None:
        if self._writer is not None:  # a start without an end: commit what we have first
            self._finish(Outcome.UNKNOWN, "ended by the next episode's start")
        self._start, self._stats = start, EpisodeStats()
        self._spool_bytes_at_start = self.spool.total_bytes()
        path = self.cfg.spool_dir / episode_filename(start.episode_id)
        try:
            self._writer = EpisodeWriter(path, start, chunk_bytes=self.cfg.chunk_bytes)
        except OSError as exc:
            self._fail(_os_error_text(f"cannot create episode file {path}.partial", exc))
            return
        self._last_flush = self._last_capacity_check = time.monotonic()
        self._log("info", f"recording {start.episode_id} ({start.task}) -> {path}")

    def _write_step(self, r: StepRecord) -> None:
        st, w = self._stats, self._writer
        step = st.steps
        assert w is not None and self._start is not None

        def write() -> None:
            for cam in self._start.cameras:
                frame = r.images[cam]
                if r.received_mono - frame.received_mono > self.cfg.stale_image_s:
                    stale[0] = True
                self._write_frame(w, cam, frame, step)
            w.write_joint_state(r.joint_position, step, r.joint_stamp_ns, velocity=r.joint_velocity)
            w.write_action(r.position, step, r.stamp_ns, source=r.source, policy_version=r.policy_version)
            if r.sim is not None:
                w.write_sim_state(step=step, stamp_ns=r.stamp_ns, **r.sim)

        stale = [False]
        if not self._guarded(write):
            return
        st.steps += 1
        st.stale_image_steps += stale[0]
        if r.source == ActionSource.HUMAN:
            st.intervention_steps += 1
            st.interventions += st.last_source != ActionSource.HUMAN
        elif r.source == ActionSource.HOLD:
            st.hold_steps += 1
        elif r.policy_version:
            st.policy_versions.add(int(r.policy_version))
        if st.last_controller_step >= 0 and r.controller_step > st.last_controller_step + 1:
            st.action_gaps += 1
        st.last_source, st.last_controller_step, st.last_stamp_ns = r.source, r.controller_step, r.stamp_ns
        if r.sim is not None:
            st.subtasks_done, st.num_subtasks = int(r.sim["subtask_index"]), int(r.sim["num_subtasks"])
        self._after_write()

    def _write_frame(self, w: EpisodeWriter, cam: str, frame: Frame, step: int) -> None:
        if isinstance(frame.data, bytes | bytearray | memoryview):
            if self.cfg.passthrough_images:
                w.write_raw(f"/observation/images/{cam}", IMAGE_TYPE, bytes(frame.data), step, frame.stamp_ns)
                return
            raise TypeError("image processing needs decoded Image messages, got CDR bytes")
        rgb = image_msg_to_numpy(frame.data, "rgb8", copy=False)
        if self.cfg.image_downscale > 1:
            rgb = downscale(rgb, self.cfg.image_downscale)
        compression = None if self.cfg.image_compression == "none" else self.cfg.image_compression
        w.write_image(cam, np.ascontiguousarray(rgb), step, frame.stamp_ns, compression, self.cfg.jpeg_quality)

    def _after_write(self) -> None:
        now = time.monotonic()
        self._maybe_flush(now)
        if now - self._last_capacity_check < 0.5:
            return
        self._last_capacity_check = now
        w = self._writer
        if w is None:
            return
        self._stats.bytes_written = _file_size(w.partial_path)
        if self._spool_bytes_at_start + self._stats.bytes_written > self.cfg.max_spool_bytes:
            self._stop_episode(
                f"spool limit: {self.cfg.spool_dir} would exceed max_spool_bytes={self.cfg.max_spool_bytes}"
            )
            return
        free = shutil.disk_usage(self.cfg.spool_dir).free
        if free < self.cfg.min_free_bytes:
            self._stop_episode(f"disk nearly full: {free} bytes free < min_free_bytes={self.cfg.min_free_bytes}")

    def _maybe_flush(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._writer is not None and now - self._last_flush >= self.cfg.flush_period_s:
            self._last_flush = now
            self._guarded(self._writer.flush)

    def _stop_episode(self, reason: str) -> None:
        """Commit what is recorded, labelled, and tell the owner to stop starting episodes."""
        start = self._start
        self.last_error = f"recording stopped: {reason}"
        self._log("error", f"{self.last_error}; committing {self._stats.steps} steps of {start.episode_id}")
        self._finish(Outcome.UNKNOWN, f"stopped early: {reason}")
        if start is not None:
            self._on_stopped(start, reason)

    def _finish(self, outcome: Outcome, note: str) -> None:
        w, start, st = self._writer, self._start, self._stats
        self._writer = None
        if w is None:
            self.busy = False
            return
        if st.steps == 0:
            w.abandon()
            w.partial_path.unlink(missing_ok=True)
            self._log("warn", f"episode {start.episode_id} ended with no recorded step: nothing committed")
            self.busy = False
            return
        notes = [note] if note else []
        if st.dropped_steps:
            notes.append(f"{st.dropped_steps} steps dropped (writer queue full)")
        if st.stale_image_steps:
            notes.append(f"{st.stale_image_steps} steps with a camera frame older than {self.cfg.stale_image_s} s")
        if st.action_gaps:
            notes.append(f"{st.action_gaps} gaps in the controller's step counter")
        end = EpisodeEnd(
            outcome=outcome,
            num_steps=st.steps,
            num_intervention_steps=st.intervention_steps,
            num_interventions=st.interventions,
            subtasks_done=st.subtasks_done,
            num_subtasks=st.num_subtasks,
            ended_at_ns=st.last_stamp_ns,
            policy_versions=tuple(sorted(st.policy_versions)),
            note="; ".join(notes),
        )
        try:
            path = w.close(end)
        except OSError as exc:
            w.abandon()
            self._fail(_os_error_text(f"cannot commit {w.final_path}", exc), start=start)
            return
        self.committed_total += 1
        self.busy = False
        self._log("info", f"committed {path.name}: {st.steps} steps, outcome {outcome.value}")
        self._on_committed(start, end, path)

    def _guarded(self, fn: Callable[[], Any]) -> bool:
        """Run a file operation; an OS error stops the episode (partial kept for recovery)."""
        try:
            fn()
            return True
        except OSError as exc:
            w = self._writer
            self._fail(_os_error_text(f"cannot write {w.partial_path if w else 'episode'}", exc))
            return False

    def _fail(self, message: str, start: EpisodeStart | None = None) -> None:
        start = start or self._start
        w, self._writer = self._writer, None
        if w is not None:
            with contextlib.suppress(OSError):
                w.abandon()
        self.last_error = message
        self.busy = False
        self._log("error", f"{message}; recording stopped (the .partial file is recovered at the next start)")
        if start is not None:
            self._on_stopped(start, message)


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _os_error_text(what: str, exc: OSError) -> str:
    kind = {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file size limit reached",
        errno.EIO: "I/O error",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
    }.get(exc.errno or 0, "OS error")
    return f"{what}: {kind} ({exc.strerror or exc})"
