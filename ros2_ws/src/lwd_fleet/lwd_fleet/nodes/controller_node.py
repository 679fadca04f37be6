"""controller: the 30 Hz policy / teleop / safety loop of one robot (`ros2 run lwd_fleet controller`).

Runs on a SingleThreadedExecutor (MultiThreadedExecutor stalls under camera load, env-notes) with
a steady-clock timer at ``control_rate_hz``. Per tick (logic in ``lwd_fleet.control.loop``):
e-stop > episode-start re-seed > human takeover > no policy > watchdog > policy chunk, then the
SafetyFilter (joint limits, per-tick step, e-stop latch) -- every tick publishes exactly one
``joint_command``, ``controller/executed_action`` (source POLICY/HUMAN/HOLD + policy version)
and, on change and at 1 Hz, ``controller/mode`` and ``controller/active_policy``.

Inference runs ahead in an InferenceWorker thread. Chunk scheme (ChunkExecutor): a chunk of H=30
rows is conditioned on the observation of tick t and row i targets tick t+i; when at most
``request_lead_ticks`` (default 6 = 200 ms, ORT-CPU p99 under load + margin) planned rows remain,
this tick's observation is sent for the next chunk. A chunk arriving late drops its rows for
past ticks; the rest is cross-faded into the old plan over ``blend_steps`` ticks
(a = (1-w) old + w new, w = j/(L+1)). After a takeover, hold, e-stop or policy swap the old plan
is discarded, a fresh chunk is requested from the current state and ramps in from the commanded
pose over ``takeover_blend_steps`` (bumpless); until it arrives the pose is held.

Inputs: ``joint_states`` (always), ``sim/state`` (only while the policy's state_source is
"sim_state"), ``cameras/<name>/image_raw`` (only for the policy's cameras, synchronised by
CameraSynchronizer), ``estop`` (std_msgs/Bool: True latches; release only via the
``controller/release_estop`` std_srvs/Trigger service), ``teleop/joint_target`` (human commands,
see control.loop), ``episode/event`` and ``policy/status``.

Policy swap: ``policy_dir`` (optional) is the initial artifact. When ``policy/status`` reports
state "ready" with pending_version V, <policy_cache_dir>/v%06d is verified (manifest, sha256s, I/O
contract, joint names, horizon, version), loaded, checked against its reference I/O and warmed up
in a background thread, then swapped in only between episodes (after ENDED, or on STARTED before
the episode's first step) -- never mid-episode. A failure keeps the running policy and is reported
in ``controller/active_policy`` (state "rejected", message says why). No policy -> HOLD.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from lwd_fleet.control.camera_sync import CameraSynchronizer, SyncConfig
from lwd_fleet.control.chunking import ExecutorConfig
from lwd_fleet.control.loop import ControlLoop, HumanCommand, HumanCommandError, LoopConfig, TickOutput
from lwd_fleet.control.safety import SafetyConfig
from lwd_fleet.control.topics import RELEASE_ESTOP, TELEOP_JOINT_TARGET
from lwd_fleet.imaging import image_msg_to_numpy
from lwd_fleet.inference.artifact import PolicyObservation, artifact_dir
from lwd_fleet.inference.loader import LoadedPolicy, LoaderConfig, LoadFailure, PolicyLoader
from lwd_fleet.inference.select import DEFAULT_ENGINE_CACHE
from lwd_fleet.inference.worker import InferenceRequest, InferenceWorker
from lwd_fleet.nodes.spin import run_node
from lwd_msgs.msg import ActionChunk as ActionChunkMsg
from lwd_msgs.msg import ControlMode, EpisodeEvent, ExecutedAction, PolicyStatus, SimState
from lwd_protocol.names import RosTopics
from lwd_protocol.robot_spec import CHUNK_HORIZON, CONTROL_RATE_HZ, JOINT_NAMES

TIMING_LOG_TICKS = 1 << 16  # tick start times kept for period statistics (~36 min at 30 Hz)

# name -> (default, description). Joint limits have no default: a silent default is never safe.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "robot_id": ("", "robot id reported in controller/active_policy"),
    "policy_dir": ("", "initial policy artifact folder (manifest.json + policy.onnx); '' = start without"),
    "policy_cache_dir": ("", "policy sync's cache: versions live in <dir>/v%06d; '' = no hot swap"),
    "backend": ("auto", "auto | tensorrt | onnxruntime-cuda | onnxruntime-cpu"),
    "trt_engine_cache_dir": ("", f"TensorRT engine cache ('' = {DEFAULT_ENGINE_CACHE})"),
    "trt_fp16": (False, "build TensorRT engines in fp16"),
    "inference_threads": (0, "onnxruntime intra-op threads (0 = onnxruntime default)"),
    "warmup_iterations": (3, "inference runs after loading, before a policy may drive"),
    "noise_seed": (-1, "seed of the flow noise (-1 = random)"),
    "task": ("", "task of multi-task policies until an episode/event STARTED names one"),
    "control_rate_hz": (CONTROL_RATE_HZ, "control loop rate"),
    "joint_limits_lower": (Parameter.Type.DOUBLE_ARRAY, "lower joint limits, JOINT_NAMES order (required)"),
    "joint_limits_upper": (Parameter.Type.DOUBLE_ARRAY, "upper joint limits, JOINT_NAMES order (required)"),
    "max_step_arm": (0.05, "max arm joint change per tick [rad] (0.05 = 1.5 rad/s at 30 Hz)"),
    "max_step_gripper": (0.004, "max gripper change per tick [m]"),
    "request_lead_ticks": (6, "request the next chunk when this many planned rows remain"),
    "blend_steps": (5, "cross-fade length between consecutive chunks [ticks]"),
    "takeover_blend_steps": (10, "ramp of the first chunk after a takeover/hold/swap [ticks]"),
    "request_timeout_ticks": (15, "re-request a chunk if none arrived after this many ticks"),
    "human_blend_steps": (10, "ramp into absolute human position targets [ticks]"),
    "human_timeout_s": (0.25, "human command stream older than this -> HOLD"),
    "joint_state_max_age_s": (0.1, "watchdog: max age of joint_states"),
    "sim_state_max_age_s": (0.1, "watchdog: max age of sim/state (sim_state policies)"),
    "camera_max_age_s": (0.2, "watchdog: max age of each camera the policy uses"),
    "camera_max_spread_s": (0.035, "max stamp spread of one camera triple (~1 frame at 30 Hz)"),
    "inference_grace_s": (0.0, "how long an exhausted plan holds before the watchdog reports it"),
    "status_period_s": (1.0, "period of controller/mode and controller/active_policy refreshes"),
}


def _stamp_s(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@dataclass
class _PolicySlot:
    """The running policy and its worker."""

    loaded: LoadedPolicy
    worker: InferenceWorker


class ControllerNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("controller", **kwargs)
        from rcl_interfaces.msg import ParameterDescriptor

        for name, (default, text) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=text))
        p = self._param
        lower, upper = self._limits("joint_limits_lower"), self._limits("joint_limits_upper")
        self.rate_hz = float(p("control_rate_hz"))
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"control_rate_hz must be > 0, got {self.rate_hz}")
        safety = SafetyConfig(lower, upper, float(p("max_step_arm")), float(p("max_step_gripper")))
        executor_cfg = ExecutorConfig(
            request_lead_ticks=int(p("request_lead_ticks")),
            blend_steps=int(p("blend_steps")),
            takeover_blend_steps=int(p("takeover_blend_steps")),
            request_timeout_ticks=int(p("request_timeout_ticks")),
        )
        self.loop = ControlLoop(
            LoopConfig(
                safety=safety,
                executor=executor_cfg,
                rate_hz=self.rate_hz,
                joint_state_max_age_s=float(p("joint_state_max_age_s")),
                inference_grace_s=float(p("inference_grace_s")),
                human_timeout_s=float(p("human_timeout_s")),
                human_blend_steps=int(p("human_blend_steps")),
            )
        )
        self.robot_id = str(p("robot_id"))
        self.default_task = str(p("task"))
        self.sim_state_max_age = float(p("sim_state_max_age_s"))
        self.camera_max_age = float(p("camera_max_age_s"))
        self.camera_max_spread = float(p("camera_max_spread_s"))
        self.policy_cache_dir = str(p("policy_cache_dir"))
        seed = int(p("noise_seed"))
        self._seed = None if seed < 0 else seed
        threads = int(p("inference_threads"))
        backend_kwargs: dict[str, Any] = {
            "trt_cache_dir": Path(str(p("trt_engine_cache_dir")) or DEFAULT_ENGINE_CACHE).expanduser(),
            "fp16": bool(p("trt_fp16")),
            "ort_threads": threads if threads > 0 else None,
        }
        self.loader = PolicyLoader(
            LoaderConfig(
                preference=str(p("backend")),
                joint_names=JOINT_NAMES,
                horizon=CHUNK_HORIZON,
                warmup_iterations=int(p("warmup_iterations")),
                backend_kwargs=backend_kwargs,
            )
        )

        # --- state ---------------------------------------------------------------------------
        self._slot: _PolicySlot | None = None
        self._pending: LoadedPolicy | None = None
        self._retired: list[_PolicySlot] = []  # swapped out; closed once their worker is idle
        self._failed: set[int] = set()
        self._status_state, self._status_message = "idle", "no policy loaded"
        self._last_swap = None
        self._measured: np.ndarray | None = None
        self._sim_state: np.ndarray | None = None
        self._camera_sync: CameraSynchronizer | None = None
        self._task = self.default_task
        self._joint_index: tuple[tuple[str, ...], np.ndarray] | None = None
        self._t0: float | None = None
        self._last_tick = -1
        self.tick_times: collections.deque[float] = collections.deque(maxlen=TIMING_LOG_TICKS)
        self.missed_ticks = 0
        self.inference_failures = 0
        self.inference_latency_s: collections.deque[float] = collections.deque(maxlen=TIMING_LOG_TICKS)
        self.source_counts: collections.Counter[str] = collections.Counter()
        self.camera_frames: collections.Counter[str] = collections.Counter()
        self._mode_key: tuple | None = None
        self._last_mode_pub = -math.inf
        self._last_status_pub = -math.inf
        self._status_dirty = True

        # --- ROS interfaces ------------------------------------------------------------------
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.cmd_pub = self.create_publisher(JointState, RosTopics.JOINT_COMMAND, reliable)
        self.exec_pub = self.create_publisher(
            ExecutedAction, RosTopics.EXECUTED_ACTION, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.mode_pub = self.create_publisher(ControlMode, RosTopics.CONTROL_MODE, latched)
        self.chunk_pub = self.create_publisher(ActionChunkMsg, RosTopics.ACTION_CHUNK, reliable)
        self.status_pub = self.create_publisher(PolicyStatus, RosTopics.ACTIVE_POLICY, latched)
        self.create_subscription(JointState, RosTopics.JOINT_STATES, self._on_joint_state, qos_profile_sensor_data)
        self.create_subscription(Bool, RosTopics.ESTOP, self._on_estop, reliable)
        self.create_subscription(JointState, TELEOP_JOINT_TARGET, self._on_human, reliable)
        self.create_subscription(
            EpisodeEvent,
            RosTopics.EPISODE_EVENT,
            self._on_episode_event,
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.create_subscription(PolicyStatus, RosTopics.POLICY_STATUS, self._on_policy_status, reliable)
        self.create_service(Trigger, RELEASE_ESTOP, self._on_release_estop)
        self._sim_sub = None
        self._camera_subs: dict[str, Any] = {}
        self.status_period = float(p("status_period_s"))
        self.timer = self.create_timer(1.0 / self.rate_hz, self._on_tick, clock=Clock(clock_type=ClockType.STEADY_TIME))

        initial = str(p("policy_dir"))
        if initial:
            self.loader.request(initial)
            self._set_status("building", f"loading initial policy from {initial}")
        self.get_logger().info(
            f"controller: {self.rate_hz:g} Hz, backend preference {p('backend')!r}, "
            f"policy_dir={initial or '-'}, policy_cache_dir={self.policy_cache_dir or '-'}"
        )

    # ---------------------------------------------------------------------------- parameters
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _limits(self, name: str) -> tuple[float, ...]:
        try:
            values = self.get_parameter(name).value
        except Exception as exc:  # ParameterUninitializedException
            raise ValueError(f"parameter {name} is required: {len(JOINT_NAMES)} values in JOINT_NAMES order") from exc
        values = tuple(float(v) for v in (values or ()))
        if len(values) != len(JOINT_NAMES):
            raise ValueError(f"parameter {name} has {len(values)} values, expected {len(JOINT_NAMES)} ({JOINT_NAMES})")
        return values

    # -------------------------------------------------------------------------------- inputs
    def _on_joint_state(self, msg: JointState) -> None:
        position = self._reorder(msg)
        if position is None:
            return
        self._measured = position
        self.loop.joint_state(position, _stamp_s(msg.header.stamp), time.monotonic())

    def _reorder(self, msg: JointState) -> np.ndarray | None:
        pos = np.asarray(msg.position, dtype=np.float64)
        names = tuple(msg.name)
        if not names:
            if pos.shape == (len(JOINT_NAMES),):
                return pos
        else:
            if self._joint_index is None or self._joint_index[0] != names:
                index = {n: i for i, n in enumerate(names)}
                if len(names) == len(pos) and all(n in index for n in JOINT_NAMES):
                    self._joint_index = (names, np.asarray([index[n] for n in JOINT_NAMES]))
                else:
                    self._joint_index = None
            if self._joint_index is not None:
                return pos[self._joint_index[1]]
        self.get_logger().warning(
            f"ignoring joint_states: names {list(names)} / {pos.size} positions do not cover {JOINT_NAMES}",
            throttle_duration_sec=2.0,
        )
        return None

    def _on_sim_state(self, msg: SimState) -> None:
        self._sim_state = np.asarray(msg.state, dtype=np.float64)  # float32[] arrives as array.array
        self.loop.source_stamp(RosTopics.SIM_STATE, _stamp_s(msg.header.stamp))

    def _on_image(self, camera: str, msg: Image) -> None:
        self.camera_frames[camera] += 1
        stamp = _stamp_s(msg.header.stamp)
        if self._camera_sync is not None:
            self._camera_sync.add(camera, stamp, msg)  # converted to numpy only when a request needs it
        self.loop.source_stamp(camera, stamp)

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.loop.estopped:
            self.loop.engage_estop("estop topic")
            self.get_logger().error(f"E-STOP latched (estop topic); release with the {RELEASE_ESTOP} service")

    def _on_release_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        released = self.loop.release_estop()
        response.success = released
        response.message = "e-stop released" if released else "e-stop was not latched"
        if released:
            self.get_logger().warning("e-stop released by service call; motion resumes rate-limited")
        return response

    def _on_human(self, msg: JointState) -> None:
        try:
            command = HumanCommand.parse(msg.name, msg.position, msg.velocity)
        except HumanCommandError as exc:
            self.get_logger().warning(f"ignoring {TELEOP_JOINT_TARGET} message: {exc}", throttle_duration_sec=1.0)
            return
        was = self.loop.human_engaged
        self.loop.human(command, time.monotonic())
        if was != self.loop.human_engaged:
            self.get_logger().info("human takeover" if command is not None else "human released: policy replans")

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.STARTED:
            if msg.task:
                self._task = msg.task
            self._maybe_swap(boundary="episode start")  # before the episode's first step
            self.loop.episode_started(_stamp_s(msg.header.stamp), time.monotonic())
        elif msg.event == EpisodeEvent.ENDED:
            self.loop.episode_ended()
            self._maybe_swap(boundary="episode end")

    def _on_policy_status(self, msg: PolicyStatus) -> None:
        version = int(msg.pending_version)
        if msg.state != "ready" or version < 1:
            return
        if not self.policy_cache_dir:
            self.get_logger().warning(
                f"policy v{version} is ready but policy_cache_dir is not set", throttle_duration_sec=10.0
            )
            return
        busy = self.loader.in_progress
        known = {
            self._slot.loaded.version if self._slot else None,
            self._pending.version if self._pending else None,
            busy[1] if busy else None,
        }
        if version in known or version in self._failed:
            return
        folder = artifact_dir(self.policy_cache_dir, version)
        self.get_logger().info(f"policy v{version} ready in the cache: loading {folder} in the background")
        self.loader.request(folder, version)
        self._set_status("building", f"loading v{version}")

    # ------------------------------------------------------------------------------- policy
    def _poll_loader(self) -> None:
        result = self.loader.poll()
        if result is None:
            return
        if isinstance(result, LoadFailure):
            if result.version is not None:
                self._failed.add(result.version)
            keeping = f"keeping v{self._slot.loaded.version}" if self._slot else "no policy running"
            what = f"v{result.version}" if result.version is not None else str(result.folder)
            self.get_logger().error(f"policy {what} rejected: {result.error}; {keeping}")
            self._set_status("rejected", f"{what} rejected: {result.error}; {keeping}")
            return
        if self._pending is not None:
            self._retire_backend(self._pending)
        self._pending = result
        self.get_logger().info(
            f"policy v{result.version} loaded in {result.load_s:.2f} s on {result.backend.name} "
            f"(reference I/O max error {result.reference_error}); engine: {result.reason}"
        )
        self._set_status("ready", f"v{result.version} loaded, waiting for an episode boundary")
        if not self.loop.in_episode:
            self._maybe_swap(boundary="between episodes")

    def _maybe_swap(self, boundary: str) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        old = self._slot
        worker = InferenceWorker(pending.backend, policy_version=pending.version, seed=self._seed).start()
        self._slot = _PolicySlot(pending, worker)
        if old is not None:
            old.worker.stop(timeout=0.0)  # returns at once; the thread ends after its current request
            self._retired.append(old)
        art = pending.artifact
        sources: dict[str, float] = {}
        if art.state_source == "sim_state":
            sources[RosTopics.SIM_STATE] = self.sim_state_max_age
        cameras = art.cameras if art.needs_images else ()
        for cam in cameras:
            sources[cam] = self.camera_max_age
        self._configure_inputs(art.state_source == "sim_state", cameras)
        self.loop.set_policy(pending.version, sources)
        self._last_swap = self.get_clock().now().to_msg()
        previous = f"v{old.loaded.version}" if old else "none"
        self.get_logger().info(
            f"policy v{pending.version} active ({boundary}; was {previous}); engine {pending.backend.name}: "
            f"{pending.reason}"
        )
        self._set_status("idle", f"v{pending.version} active on {pending.backend.name}: {pending.reason}")

    def _configure_inputs(self, sim_state: bool, cameras: tuple[str, ...]) -> None:
        """Subscribe to exactly the inputs the active policy consumes."""
        if sim_state and self._sim_sub is None:
            self._sim_sub = self.create_subscription(
                SimState, RosTopics.SIM_STATE, self._on_sim_state, qos_profile_sensor_data
            )
        elif not sim_state and self._sim_sub is not None:
            self.destroy_subscription(self._sim_sub)
            self._sim_sub, self._sim_state = None, None
        for cam in [c for c in self._camera_subs if c not in cameras]:
            self.destroy_subscription(self._camera_subs.pop(cam))
        for cam in cameras:
            if cam not in self._camera_subs:
                self._camera_subs[cam] = self.create_subscription(
                    Image,
                    RosTopics.camera_image(cam),
                    lambda msg, c=cam: self._on_image(c, msg),
                    qos_profile_sensor_data,
                )
        self._camera_sync = (
            CameraSynchronizer(SyncConfig(tuple(cameras), self.camera_max_spread, self.camera_max_age))
            if cameras
            else None
        )

    def _retire_backend(self, loaded: LoadedPolicy) -> None:
        loaded.backend.close()

    def _close_retired(self) -> None:
        still = []
        for slot in self._retired:
            if slot.worker.running:  # still finishing a request on the old engine
                still.append(slot)
            else:
                slot.loaded.backend.close()
        self._retired = still

    # ---------------------------------------------------------------------------- the tick
    def _on_tick(self) -> None:
        wall = time.monotonic()
        self.tick_times.append(wall)
        if self._t0 is None:
            self._t0 = wall
        tick = max(self._last_tick + 1, round((wall - self._t0) * self.rate_hz))
        if self._last_tick >= 0 and tick > self._last_tick + 1:
            self.missed_ticks += tick - self._last_tick - 1
        self._last_tick = tick
        now_s = self.get_clock().now().nanoseconds * 1e-9

        self._poll_loader()
        if self._retired:
            self._close_retired()
        slot = self._slot
        if slot is not None:
            self._poll_inference(slot, now_s)
        problem = self._observation_problem(now_s) if slot is not None else ""
        out = self.loop.tick(tick, now_s, wall, problem)
        if out is None:
            self._publish_mode_waiting(wall)
        else:
            if out.request_inference and slot is not None:
                self._request_inference(slot, out.tick, now_s)
            self._publish(out, wall)
        if self._status_dirty or wall - self._last_status_pub >= self.status_period:
            self._publish_status(wall)

    def _poll_inference(self, slot: _PolicySlot, now_s: float) -> None:
        result = slot.worker.poll()
        if result is None:
            return
        if result.error is not None:
            self.inference_failures += 1
            self.get_logger().error(
                f"inference for tick {result.step} failed: {result.error}", throttle_duration_sec=1.0
            )
            return
        self.inference_latency_s.append(result.latency_s)
        chunk = result.to_action_chunk()
        if not self.loop.submit_chunk(chunk):
            self.get_logger().debug(f"chunk from tick {chunk.start_step} not used: {self.loop.executor.last_rejection}")
            return
        msg = ActionChunkMsg(
            policy_version=chunk.policy_version,
            horizon=chunk.actions.shape[0],
            action_dim=chunk.actions.shape[1],
            start_step=max(0, self.loop.episode_step(chunk.start_step)),
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.data = np.asarray(chunk.actions, np.float32).ravel().tolist()
        self.chunk_pub.publish(msg)

    def _observation_problem(self, now_s: float) -> str:
        slot = self._slot
        assert slot is not None
        art = slot.loaded.artifact
        if art.state_source == "sim_state" and self._sim_state is None:
            return "sim/state never received"
        tasks = art.manifest.observation.tasks
        if tasks and self._task not in tasks:
            return f"task {self._task!r} is not one of the policy's tasks {tasks}"
        if self._camera_sync is not None:
            sync = self._camera_sync.latest(now_s)
            if not sync.ok:
                return sync.reason
        return ""

    def _request_inference(self, slot: _PolicySlot, tick: int, now_s: float) -> None:
        art = slot.loaded.artifact
        state = self._sim_state if art.state_source == "sim_state" else self._measured
        if state is None:
            return
        images = None
        if self._camera_sync is not None:
            sync = self._camera_sync.latest(now_s)
            if not sync.ok or sync.frames is None:
                return
            images = {cam: image_msg_to_numpy(msg, "rgb8", copy=False) for cam, msg in sync.frames.items()}
        slot.worker.submit(InferenceRequest(tick, PolicyObservation(state.copy(), self._task, images)))

    # ------------------------------------------------------------------------------ outputs
    def _publish(self, out: TickOutput, wall: float) -> None:
        self.source_counts[out.source.name] += 1
        stamp = self.get_clock().now().to_msg()
        cmd = JointState(name=list(JOINT_NAMES), position=out.command.tolist())
        cmd.header.stamp = stamp
        self.cmd_pub.publish(cmd)
        executed = ExecutedAction(step=out.episode_step, source=int(out.source), policy_version=out.policy_version)
        executed.header.stamp = stamp
        executed.position = out.command.astype(np.float32).tolist()
        self.exec_pub.publish(executed)
        reason_kind = out.reason.split(":", 1)[0]
        key = (int(out.mode), out.human_arms, out.intervention_active, out.intervention_count, reason_kind)
        if key != self._mode_key or wall - self._last_mode_pub >= self.status_period:
            if key != self._mode_key:
                self.get_logger().info(f"mode {out.mode.name}: {out.reason or 'policy driving'}")
            self._mode_key, self._last_mode_pub = key, wall
            mode = ControlMode(
                mode=int(out.mode),
                human_arms=out.human_arms,
                intervention_active=out.intervention_active,
                intervention_count=out.intervention_count,
                reason=out.reason,
            )
            mode.header.stamp = stamp
            self.mode_pub.publish(mode)

    def _publish_mode_waiting(self, wall: float) -> None:
        key = ("waiting",)
        if key != self._mode_key or wall - self._last_mode_pub >= self.status_period:
            self._mode_key, self._last_mode_pub = key, wall
            mode = ControlMode(mode=ControlMode.HOLD, reason="waiting for the first joint_states message")
            mode.header.stamp = self.get_clock().now().to_msg()
            self.mode_pub.publish(mode)

    def _set_status(self, state: str, message: str) -> None:
        self._status_state, self._status_message = state, message
        self._status_dirty = True

    def _publish_status(self, wall: float) -> None:
        slot = self._slot
        busy = self.loader.in_progress
        pending = self._pending.version if self._pending else ((busy[1] or 0) if busy else 0)
        msg = PolicyStatus(
            robot_id=self.robot_id,
            active_version=slot.loaded.version if slot else 0,
            pending_version=int(pending),
            engine_backend=slot.loaded.backend.name if slot else "",
            state=self._status_state,
            message=self._status_message,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        if self._last_swap is not None:
            msg.last_swap_time = self._last_swap
        self.status_pub.publish(msg)
        self._status_dirty, self._last_status_pub = False, wall

    # ----------------------------------------------------------------------------- shutdown
    def close(self) -> None:
        self.loader.close()
        for slot in [*self._retired, *([self._slot] if self._slot else [])]:
            slot.worker.stop(timeout=2.0)
            slot.loaded.backend.close()
        if self._pending is not None:
            self._pending.backend.close()
        self._slot, self._pending, self._retired = None, None, []


def main(args: list[str] | None = None) -> None:
    run_node(ControllerNode, lambda node: node.close(), args)


if __name__ == "__main__":
    main()
