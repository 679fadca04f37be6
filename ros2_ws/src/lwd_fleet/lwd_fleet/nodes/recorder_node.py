"""Recorder node: one MCAP episode per episode, committed atomically into the spool.

Step t of an episode is the t-th ``controller/executed_action`` received after the episode
started; it is stored with the newest joint state, camera frames (one per camera, as they
arrived; older than ``stale_image_s`` is counted in the end note) and sim state received before
it, so the observation beside each action is what existed when it was executed. The recorder
numbers steps itself, so a dropped or late action never leaves a hole in the file (the
controller's own counter is checked and gaps are noted).

Episode lifecycle on ``episode/event`` (lwd_msgs/EpisodeEvent, reliable, volatile):
- STARTED with an episode id: published by this recorder when it opens the episode file, i.e.
  after the reset (if any) once joint states and every camera (or ``wait_for_cameras_s``) are
  there; the controller treats it as the episode boundary. STARTED with an empty id is a start *request*
  (``start_mode: request``: e.g. an operator's button or a script); it may carry task and
  instruction. With ``start_mode: auto`` the recorder starts on its own at start-up and after
  every commit. With ``reset_service: true`` it first calls ``episode/reset`` on the driver
  (sim: new scene under a seed the recorder picks and stores) and records the returned task
  and instruction. Step 0 is the first executed action after STARTED.
- ENDED with an outcome: from teleop (operator marks success / failure / abort) or any other
  node, for the current episode (its id, or an empty id). The recorder publishes ENDED itself
  when it ends an episode on its own: ``max_episode_steps`` (TIMEOUT), sim success/failure
  (``end_on_sim_outcome``), or a spool/disk problem (UNKNOWN, with a note).
- COMMITTED: published by this recorder after the rename; carries the final counts.

At start-up, ``*.mcap.partial`` files a crash left behind are rebuilt into labelled recovered
episodes or quarantined (lwd_fleet.recording.recovery). When the spool is over
``max_spool_bytes`` or the disk under ``min_free_bytes``, no episode starts (status and log say
why) until the uplink has made room. The recorder never publishes anything the controller
acts on except the episode events, so its failures cannot disturb control.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from lwd_fleet.nodes.spin import run_node
from lwd_fleet.recording import (
    RECORDER_STATUS_TOPIC,
    EpisodeRecorder,
    Frame,
    RecorderConfig,
    StepRecord,
    cdr_header_stamp_ns,
    joint_vector,
    recover_spool,
)
from lwd_msgs.msg import ControlMode, EpisodeEvent, ExecutedAction, SimState
from lwd_msgs.srv import ResetEpisode
from lwd_protocol.episode import EpisodeEnd, EpisodeSource, EpisodeStart, Outcome, new_episode_id
from lwd_protocol.episode_io import MAX_EPISODE_STEPS
from lwd_protocol.names import RosTopics, validate_robot_id
from lwd_protocol.robot_spec import CAMERA_NAMES
from lwd_protocol.tasks import TASK_NAMES, task_info

OUTCOME_FROM_EVENT = {
    EpisodeEvent.OUTCOME_UNKNOWN: Outcome.UNKNOWN,
    EpisodeEvent.OUTCOME_SUCCESS: Outcome.SUCCESS,
    EpisodeEvent.OUTCOME_FAILURE: Outcome.FAILURE,
    EpisodeEvent.OUTCOME_TIMEOUT: Outcome.TIMEOUT,
    EpisodeEvent.OUTCOME_ABORTED: Outcome.ABORTED,
}
EVENT_FROM_OUTCOME = {v: k for k, v in OUTCOME_FROM_EVENT.items()}
START_MODES = ("auto", "request")


_D = RecorderConfig(robot_id="robot_01", spool_dir=Path("."))
# name -> (default, description)
PARAMETERS: dict[str, tuple[Any, str]] = {
    "robot_id": ("robot_01", "this robot's id (episode ids, metadata)"),
    "spool_dir": ("/var/lib/lwd/spool", "where committed episodes wait for the uplink"),
    "max_spool_bytes": (_D.max_spool_bytes, "no new episode while the spool holds this much"),
    "min_free_bytes": (_D.min_free_bytes, "stop recording when the disk has less free space"),
    "chunk_bytes": (_D.chunk_bytes, "MCAP chunk size: the most a crash can lose"),
    "queue_steps": (_D.queue_steps, "steps buffered for the writer before new ones are dropped"),
    "image_compression": (_D.image_compression, "none | jpeg | png (CompressedImage in the episode)"),
    "jpeg_quality": (_D.jpeg_quality, "JPEG quality 1-100"),
    "image_downscale": (_D.image_downscale, "integer box-filter downscale of recorded images"),
    "flush_period_s": (_D.flush_period_s, "push written bytes to the OS at least this often"),
    "stale_image_s": (_D.stale_image_s, "frames older than this at their step are counted in the end note"),
    "record_images": (True, "record the camera images"),
    "cameras": (list(CAMERA_NAMES), "cameras to record"),
    "task": ("restocking", 'task of the episodes; "" = the driver\'s choice via episode/reset (sim task rotation)'),
    "instruction": ("", "task instruction ('' = the task's title)"),
    "episode_source": ("online", "metadata source: online | demo | rollout | play"),
    "start_mode": ("auto", "auto: start after every commit | request: wait for STARTED with empty id"),
    "reset_service": (False, "call episode/reset on the driver before each episode"),
    "reset_seed": (-1, "scene seed sent to episode/reset (-1: a random one, recorded in the metadata)"),
    "reset_timeout_s": (10.0, "an episode/reset answer not back by then is given up and the call repeated"),
    "max_episode_steps": (30 * 60 * 10, "end an episode with outcome timeout after this many steps"),
    "end_on_sim_outcome": (True, "end the episode when sim/state reports success or failure"),
    "wait_for_cameras_s": (
        5.0,
        "at an episode start, wait this long for every camera before recording without",
    ),
    "capacity_check_s": (5.0, "how often to re-check the spool while recording is stopped for space"),
    "status_period_s": (1.0, "period of recorder/status"),
}


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        p = self._declare()
        self.robot_id = validate_robot_id(p["robot_id"])
        self.task, self.instruction = p["task"], p["instruction"]
        if self.task:
            task_info(self.task)  # clear error for an unknown task at start-up
        elif not p["reset_service"]:
            raise ValueError("task may be empty (the driver's choice) only with reset_service: true")
        self.source = EpisodeSource(p["episode_source"])
        if p["start_mode"] not in START_MODES:
            raise ValueError(f"start_mode {p['start_mode']!r} not one of {START_MODES}")
        self.start_mode, self.reset_service, self.reset_seed = p["start_mode"], p["reset_service"], p["reset_seed"]
        self.reset_timeout_s = float(p["reset_timeout_s"])
        if self.reset_timeout_s <= 0:
            raise ValueError(f"reset_timeout_s must be > 0, got {self.reset_timeout_s}")
        self.max_episode_steps = int(p["max_episode_steps"])
        if not 0 < self.max_episode_steps <= MAX_EPISODE_STEPS:
            raise ValueError(f"max_episode_steps must be in 1..{MAX_EPISODE_STEPS}, got {self.max_episode_steps}")
        self.end_on_sim_outcome = p["end_on_sim_outcome"]
        self.cameras = tuple(p["cameras"]) if p["record_images"] else ()
        unknown = [c for c in self.cameras if c not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"cameras {unknown} not in {CAMERA_NAMES}")
        self.capacity_check_s = p["capacity_check_s"]
        self.wait_for_cameras_s = p["wait_for_cameras_s"]
        spool = Path(p["spool_dir"]).expanduser()
        spool.mkdir(parents=True, exist_ok=True)
        self.cfg = RecorderConfig(
            robot_id=self.robot_id,
            spool_dir=spool,
            max_spool_bytes=p["max_spool_bytes"],
            min_free_bytes=p["min_free_bytes"],
            chunk_bytes=p["chunk_bytes"],
            queue_steps=p["queue_steps"],
            image_compression=p["image_compression"],
            jpeg_quality=p["jpeg_quality"],
            image_downscale=p["image_downscale"],
            flush_period_s=p["flush_period_s"],
            stale_image_s=p["stale_image_s"],
        )

        self.recovered = recover_spool(spool, self._log)
        self._events: collections.deque = collections.deque()  # from the writer thread, drained by the timer
        self.recorder = EpisodeRecorder(
            self.cfg,
            log=self._log,
            on_committed=lambda s, e, path: self._events.append(("committed", s, e, path)),
            on_stopped=lambda s, reason: self._events.append(("stopped", s, reason)),
        )

        # latest observation per stream (callbacks only replace references)
        self._joint: JointState | None = None
        self._joint_cache: tuple[int, tuple] | None = None
        self._frames: dict[str, Frame] = {}
        self._sim: SimState | None = None
        self._sim_seen_running = False
        # lifecycle
        self.state = "idle"
        self.reason = ""
        self._pending: tuple[str, str, int] | None = None  # task, instruction, seed of the next episode
        self._episode: EpisodeStart | None = None
        self._steps = 0
        self._seen_policy_version = 0  # newest policy version seen driving the robot
        self._armed_at = 0.0
        self._next_try = 0.0
        self._reset_future = None
        self._reset_sent_at = 0.0
        self._episode_has_sim = False

        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        sensors = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.event_pub = self.create_publisher(EpisodeEvent, RosTopics.EPISODE_EVENT, QoSProfile(depth=50))
        self.status_pub = self.create_publisher(String, RECORDER_STATUS_TOPIC, 10)
        self.create_subscription(ExecutedAction, RosTopics.EXECUTED_ACTION, self._on_action, reliable)
        self.create_subscription(JointState, RosTopics.JOINT_STATES, self._on_joint, QoSProfile(depth=10))
        self.create_subscription(SimState, RosTopics.SIM_STATE, self._on_sim, QoSProfile(depth=10))
        self.create_subscription(ControlMode, RosTopics.CONTROL_MODE, self._on_mode, QoSProfile(depth=20), raw=True)
        self.create_subscription(EpisodeEvent, RosTopics.EPISODE_EVENT, self._on_event, QoSProfile(depth=50))
        raw = self.cfg.passthrough_images
        for cam in self.cameras:
            self.create_subscription(Image, RosTopics.camera_image(cam), self._frame_callback(cam), sensors, raw=raw)
        self.reset_client = self.create_client(ResetEpisode, RosTopics.RESET_EPISODE) if self.reset_service else None
        self.create_timer(0.1, self._tick)
        self.create_timer(p["status_period_s"], self._publish_status)
        if self.start_mode == "auto":
            self._prepare_next()
        self.get_logger().info(
            f"recorder: robot={self.robot_id} spool={spool} start={self.start_mode} reset_service={self.reset_service}"
            f" images={list(self.cameras)} compression={self.cfg.image_compression} x1/{self.cfg.image_downscale}"
            f" recovered={len([r for r in self.recovered if r.recovered])}"
            f" quarantined={len([r for r in self.recovered if not r.recovered])}"
        )

    def _declare(self) -> dict:
        return {
            name: self.declare_parameter(name, default, ParameterDescriptor(description=text)).value
            for name, (default, text) in PARAMETERS.items()
        }

    def _log(self, level: str, text: str) -> None:
        if not self.context.ok():  # the final commit after SIGINT: rosout is gone, stderr is not
            print(f"[recorder] {level}: {text}", file=sys.stderr, flush=True)
            return
        logger = self.get_logger()  # rclpy wants one severity per call site: one call per level
        if level == "error":
            logger.error(text)
        elif level == "warn":
            logger.warning(text)
        else:
            logger.info(text)

    # --- observation callbacks: store references only --------------------------------------------
    def _frame_callback(self, cam: str):
        frames = self._frames

        def on_frame(msg) -> None:
            if isinstance(msg, bytes):
                frames[cam] = Frame(msg, cdr_header_stamp_ns(msg), time.monotonic())
            else:
                frames[cam] = Frame(msg, _ns(msg.header.stamp), time.monotonic())

        return on_frame

    def _on_joint(self, msg: JointState) -> None:
        self._joint = msg

    def _on_sim(self, msg: SimState) -> None:
        self._sim = msg
        if self.state != "recording" or not self.end_on_sim_outcome:
            return
        if not (msg.success or msg.failed):
            self._sim_seen_running = True
        elif self._sim_seen_running:  # a fresh outcome in this episode, not the last one's
            outcome = Outcome.SUCCESS if msg.success else Outcome.FAILURE
            progress = (int(msg.subtask_index), int(msg.num_subtasks))
            self._end(outcome, f"sim reported {outcome.value}", announce=True, progress=progress)

    def _on_mode(self, cdr: bytes) -> None:
        if self.state == "recording":
            self.recorder.add_mode(cdr, cdr_header_stamp_ns(cdr))

    # --- the per-tick path ---------------------------------------------------------------------------
    def _on_action(self, msg: ExecutedAction) -> None:
        if msg.source == ExecutedAction.SOURCE_POLICY and msg.policy_version:
            self._seen_policy_version = int(msg.policy_version)
        if self.state != "recording":
            return
        joint = self._joint_vectors()
        if joint is None:
            return
        record = StepRecord(
            position=msg.position,
            source=int(msg.source),
            policy_version=int(msg.policy_version),
            stamp_ns=_ns(msg.header.stamp),
            received_mono=time.monotonic(),
            joint_position=joint[0],
            joint_velocity=joint[1],
            joint_stamp_ns=joint[2],
            images={cam: self._frames[cam] for cam in self._episode.cameras},
            sim=self._sim_fields() if self._episode_has_sim else None,
            controller_step=int(msg.step),
        )
        if self.recorder.add_step(record):
            self._steps += 1
        if self._steps >= self.max_episode_steps:
            self._end(Outcome.TIMEOUT, f"reached max_episode_steps={self.max_episode_steps}", announce=True)

    def _joint_vectors(self):
        msg = self._joint
        if msg is None:
            return None
        if self._joint_cache is None or self._joint_cache[0] is not msg:
            try:
                pos = joint_vector(msg.name, msg.position)
                vel = joint_vector(msg.name, msg.velocity) if len(msg.velocity) == len(msg.position) else None
            except ValueError as exc:
                self.get_logger().error(f"joint_states unusable: {exc}", throttle_duration_sec=5.0)
                return None
            self._joint_cache = (msg, (pos, vel, _ns(msg.header.stamp)))
        return self._joint_cache[1]

    def _sim_fields(self) -> dict:
        s = self._sim
        return {
            "state": s.state,
            "subtask_index": int(s.subtask_index),
            "num_subtasks": int(s.num_subtasks),
            "success": bool(s.success),
            "failed": bool(s.failed),
        }

    # --- lifecycle -------------------------------------------------------------------------------------
    def _prepare_next(self, task: str = "", instruction: str = "") -> None:
        """Choose the next episode's task; call the driver's reset first when configured."""
        task = task or self.task
        seed = self.reset_seed if self.reset_seed >= 0 else random.randrange(1 << 31)
        if self.reset_client is None:
            self._pending = (task, instruction or self.instruction or task_info(task).title, -1)  # scene not ours
            self.state, self._armed_at = "armed", time.monotonic()
            return
        self._pending = (task, instruction, seed)
        self.state = "resetting"
        self._next_try = 0.0

    def _call_reset(self) -> None:
        now = time.monotonic()
        if self._reset_future is not None and now - self._reset_sent_at > self.reset_timeout_s:
            # DDS can drop a service answer (e.g. the reply reader was not matched yet at start-up):
            # waiting on it would stop this robot recording for good. Resetting again is harmless.
            self.reset_client.remove_pending_request(self._reset_future)
            self._reset_future = None
            self.reason = f"episode/reset got no answer in {self.reset_timeout_s:g} s; calling again"
            self._log("warn", self.reason)
        if self._reset_future is not None or now < self._next_try:
            return
        if not self.reset_client.service_is_ready():
            self.reason = f"waiting for the {RosTopics.RESET_EPISODE} service"
            self._next_try = time.monotonic() + 1.0
            return
        task, _, seed = self._pending
        self._reset_sent_at = time.monotonic()
        self._reset_future = self.reset_client.call_async(ResetEpisode.Request(task=task, seed=seed))
        self._reset_future.add_done_callback(self._on_reset_done)

    def _on_reset_done(self, future) -> None:
        if future is not self._reset_future:
            return  # the answer to a call already given up on
        self._reset_future = None
        try:
            response = future.result()
        except Exception as exc:
            response, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = "" if response.success else response.message
        if error:
            self.reason = f"episode/reset failed: {error}; retrying"
            self._log("error", self.reason)
            self._next_try = time.monotonic() + 2.0
            return
        task, instruction, seed = self._pending
        task = response.task or task
        self._pending = (task, instruction or response.instruction or task_info(task).title, seed)
        self.state, self.reason, self._armed_at = "armed", "", time.monotonic()

    def _try_begin(self) -> None:
        """Open the episode once the observation streams exist; steps start with the next action."""
        problem = self.recorder.capacity_problem()
        if problem:
            self._disable(problem)
            return
        if self._joint is None:
            self.reason = "waiting for joint_states"
            return
        missing = [c for c in self.cameras if c not in self._frames]
        if missing:
            if time.monotonic() - self._armed_at < self.wait_for_cameras_s:
                self.reason = f"waiting for cameras {missing}"
                return
            self._log("warn", f"recording without cameras {missing}: no frame within {self.wait_for_cameras_s} s")
        task, instruction, seed = self._pending
        start = EpisodeStart(
            episode_id=new_episode_id(self.robot_id),
            robot_id=self.robot_id,
            task=task,
            instruction=instruction,
            source=self.source,
            policy_version=self._seen_policy_version,
            started_at_ns=self.get_clock().now().nanoseconds,
            cameras=tuple(c for c in self.cameras if c in self._frames),
            seed=seed,
        )
        self._episode_has_sim = self._sim is not None
        self._sim_seen_running = self._sim is not None and not (self._sim.success or self._sim.failed)
        self._episode, self._steps = start, 0
        self.recorder.start(start)
        self.state, self.reason = "recording", ""
        self._publish_event(EpisodeEvent.STARTED, start)

    def _end(self, outcome: Outcome, note: str, announce: bool, progress: tuple[int, int] | None = None) -> None:
        if self.state != "recording":
            return
        self.state = "ending"
        self.recorder.end(outcome, note, progress)
        if announce:
            self._publish_event(EpisodeEvent.ENDED, self._episode, outcome=outcome, num_steps=self._steps)

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.robot_id and msg.robot_id != self.robot_id:
            return
        if msg.event == EpisodeEvent.ENDED and self.state == "recording":
            if msg.episode_id in ("", self._episode.episode_id):
                outcome = OUTCOME_FROM_EVENT.get(msg.outcome, Outcome.UNKNOWN)
                self._end(outcome, "", announce=False)
        elif msg.event == EpisodeEvent.STARTED and not msg.episode_id and self.state == "idle":
            if msg.task and msg.task not in TASK_NAMES:
                self._log("error", f"start request for unknown task {msg.task!r} ignored")
                return
            self._prepare_next(msg.task, msg.instruction)

    def _disable(self, reason: str) -> None:
        if self.state != "disabled" or reason != self.reason:
            self._log("error", f"not recording: {reason}")
        self.state, self.reason = "disabled", reason
        self._next_try = time.monotonic() + self.capacity_check_s

    def _tick(self) -> None:
        while self._events:
            kind, start, *rest = self._events.popleft()
            if kind == "committed":
                end: EpisodeEnd = rest[0]
                self._publish_event(EpisodeEvent.COMMITTED, start, end=end)
                if self.state == "ending" and self._episode is start:
                    self._after_episode()
            elif kind == "stopped":
                if self.state == "recording" and self._episode is start:
                    self._publish_event(EpisodeEvent.ENDED, start, outcome=Outcome.UNKNOWN, num_steps=self._steps)
                self._disable(rest[0])
        if self.state == "resetting":
            self._call_reset()
        elif self.state == "armed":
            self._try_begin()
        elif self.state == "disabled" and time.monotonic() >= self._next_try:
            problem = self.recorder.capacity_problem()
            if problem:
                self._disable(problem)
            else:
                self._log("info", f"recording resumes ({self.reason} cleared)")
                self.recovered += recover_spool(self.cfg.spool_dir, self._log)  # partials a write error left
                self.state, self.reason = "idle", ""
                if self.start_mode == "auto":
                    self._prepare_next()

    def _after_episode(self) -> None:
        self.state = "idle"
        if self.start_mode == "auto":
            self._prepare_next()

    # --- publishing ------------------------------------------------------------------------------------
    def _publish_event(
        self,
        kind: int,
        start: EpisodeStart,
        outcome: Outcome = Outcome.UNKNOWN,
        num_steps: int = 0,
        end: EpisodeEnd | None = None,
    ) -> None:
        msg = EpisodeEvent(
            event=kind,
            episode_id=start.episode_id,
            robot_id=start.robot_id,
            task=start.task,
            instruction=start.instruction,
            outcome=EVENT_FROM_OUTCOME[end.outcome if end else outcome],
            num_steps=end.num_steps if end else num_steps,
            num_intervention_steps=end.num_intervention_steps if end else 0,
            num_interventions=end.num_interventions if end else 0,
            policy_version=(max(end.policy_versions) if end and end.policy_versions else self._seen_policy_version),
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        with contextlib.suppress(Exception):  # context already shut down (SIGTERM during the final commit)
            self.event_pub.publish(msg)

    def status(self) -> dict:
        return {
            "state": self.state,
            "reason": self.reason,
            "episode_id": self._episode.episode_id if self._episode and self.state == "recording" else "",
            "steps": self._steps if self.state == "recording" else 0,
            "queue_depth": self.recorder.queue_depth,
            "dropped_steps": self.recorder.dropped_total,
            "committed": self.recorder.committed_total,
            "last_error": self.recorder.last_error,
            "recovered": [r.episode_id for r in self.recovered if r.recovered],
            "quarantined": [r.episode_id for r in self.recovered if not r.recovered],
        }

    def _publish_status(self) -> None:
        self.status_pub.publish(String(data=json.dumps(self.status())))

    def shutdown(self) -> None:
        """Commit an open episode (outcome unknown, noted) and let the writer finish."""
        if self.state == "recording":
            self.state = "ending"
            self.recorder.end(Outcome.UNKNOWN, "recorder shut down mid-episode")
        if not self.recorder.close(timeout_s=30.0):
            self._log("error", "writer did not finish within 30 s; the .partial file is recovered at the next start")


def main(args: list[str] | None = None) -> None:
    run_node(RecorderNode, lambda node: node.shutdown(), args)


if __name__ == "__main__":
    main()
