"""What the chaos orchestrator watches from outside the system under test.

- FleetObserver: one rclpy context per robot (each simulated robot has its own ROS domain, as
  separate machines would), subscribed to the robot's ``joint_command`` (the controller's 30 Hz
  output: its arrival times are the control-loop evidence), ``episode/event`` (the recorder's
  COMMITTED events: a cross-check of the produced episodes) and ``uplink/status`` (the uplink's
  counters: when a respawned uplink is connected and has uploaded).
- MqttMonitor: a read-only ``monitor`` MQTT identity following policy announcements (to check
  that versions only ever increase) and the robots' retained policy status (which version runs).
- Process-tree helpers: the pids of one robot's node processes under its ``lwd-robot``.

Arrival times are wall-clock (time.time()) so they line up with the learner's event log.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lwd_protocol.names import MqttTopics, RosTopics
from lwd_protocol.transport import MqttEndpoint


# --------------------------------------------------------------------------- process tree
def _stat_fields(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()  # the comm field may hold spaces and parentheses
    return rest[0], int(rest[1])


def alive(pid: int) -> bool:
    """Running and not a zombie (a killed child stays a zombie until its parent reaps it)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == parent:
                pids.append(int(entry.name))
    return pids


def node_pid(bringup_pid: int, node: str) -> int | None:
    """The live child of `lwd-robot` running ROS node `node` (argv has ``__node:=<node>``)."""
    marker = f"__node:={node}".encode()
    for pid in children(bringup_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in argv and alive(pid):
            return pid
    return None


# --------------------------------------------------------------------------- ROS observer
@dataclass
class RobotObservations:
    # joint_command (arrival wall time, header stamp s): the stamp is the controller's own tick time
    # (sim time under use_sim_time), so a stall of this observer or of the box shows in arrivals only
    commands: list[tuple[float, float]] = field(default_factory=list)
    committed: list[tuple[float, str]] = field(default_factory=list)  # (t, episode_id) from COMMITTED events
    uplink: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (t, uplink/status JSON)


class FleetObserver:
    """Subscribes in every robot's ROS domain; call start() after apply_to_current_process()."""

    def __init__(self, domains: dict[str, int], namespace: str = "") -> None:
        self.domains = domains
        self.namespace = namespace  # robots are separate domains, not namespaces; kept for a namespaced fleet
        self.data = {robot: RobotObservations() for robot in domains}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._contexts: list[Any] = []

    def start(self) -> FleetObserver:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from lwd_msgs.msg import EpisodeEvent

        for robot, domain in self.domains.items():
            ctx = rclpy.Context()
            rclpy.init(context=ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
            self._contexts.append(ctx)
            node = rclpy.create_node(f"chaos_observer_{robot}", namespace=self.namespace, context=ctx)
            obs = self.data[robot]
            # best effort: watching must not add back-pressure to the controller's reliable writer; a deep
            # history (10 s at 30 Hz) so a GIL-starved observer thread drops nothing it can still take
            watch = QoSProfile(depth=300, reliability=qos_profile_sensor_data.reliability)
            node.create_subscription(
                JointState,
                RosTopics.JOINT_COMMAND,
                lambda m, o=obs: o.commands.append((time.time(), _stamp_s(m.header.stamp))),
                watch,
            )
            node.create_subscription(
                EpisodeEvent,
                RosTopics.EPISODE_EVENT,
                lambda m, o=obs: self._on_event(o, m),
                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
            )
            node.create_subscription(
                String, RosTopics.UPLINK_STATUS, lambda m, o=obs: self._on_uplink(o, m), QoSProfile(depth=20)
            )
            executor = SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            thread = threading.Thread(
                target=self._spin, args=(ctx, executor, node), name=f"observe-{robot}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    @staticmethod
    def _on_event(obs: RobotObservations, msg: Any) -> None:
        from lwd_msgs.msg import EpisodeEvent

        if msg.event == EpisodeEvent.COMMITTED:
            obs.committed.append((time.time(), msg.episode_id))

    @staticmethod
    def _on_uplink(obs: RobotObservations, msg: Any) -> None:
        with contextlib.suppress(ValueError):
            obs.uplink.append((time.time(), json.loads(msg.data)))

    def _spin(self, ctx: Any, executor: Any, node: Any) -> None:
        try:
            while not self._stop.is_set() and ctx.ok():
                executor.spin_once(timeout_sec=0.1)
        finally:
            executor.shutdown()
            node.destroy_node()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for ctx in self._contexts:
            ctx.try_shutdown()

    def command_stats(self, robot: str, t0: float, t1: float, threshold_s: float) -> dict[str, Any]:
        """joint_command tick statistics for the commands that arrived within wall window [t0, t1]."""
        return command_stats(self.data[robot].commands, t0, t1, threshold_s)


def _stamp_s(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def command_stats(commands: list[tuple[float, float]], t0: float, t1: float, threshold_s: float) -> dict[str, Any]:
    """Control-loop stall statistics from (arrival, stamp) pairs of the commands that arrived in [t0, t1].

    Gaps are between consecutive *stamps*, i.e. measured on the controller's clock: what the invariant
    asks is whether the robot's loop ticked, and arrival gaps also hold the observer's own scheduling
    (a starved observer thread on a loaded 2-core box showed 0.5 s arrival gaps while the loop ran).
    Arrival gaps, including the edges before the first and after the last command, are reported beside.
    """
    window = [(a, s) for a, s in commands if t0 <= a <= t1]
    stamps = sorted(s for _, s in window)
    gaps = sorted(((b - a, a - stamps[0]) for a, b in itertools.pairwise(stamps)), reverse=True)
    inner = sorted(g for g, _ in gaps)
    p99 = inner[min(len(inner) - 1, int(0.99 * len(inner)))] if inner else None
    arrivals = [t0, *(a for a, _ in window), t1]
    return {
        "ticks": len(window),
        "rate_hz": round(len(window) / (t1 - t0), 2) if t1 > t0 else 0.0,
        "max_gap_s": round(gaps[0][0], 3) if gaps else None,
        "p99_gap_s": round(p99, 4) if p99 is not None else None,
        "gaps_over_threshold": sum(1 for g, _ in gaps if g > threshold_s),
        "largest_gaps": [{"gap_s": round(g, 3), "at_stamp_s": round(at, 2)} for g, at in gaps[:5]],
        "max_arrival_gap_s": round(max(b - a for a, b in itertools.pairwise(arrivals)), 3),
    }


# --------------------------------------------------------------------------- MQTT monitor
class MqttMonitor:
    """Follows policy announcements and robot statuses; reconnects by itself after a broker restart."""

    def __init__(self, endpoint: MqttEndpoint) -> None:
        self.endpoint = endpoint
        self.announcements: list[dict[str, Any]] = []  # every delivery (retained re-deliveries too)
        self.statuses: dict[str, dict[str, Any]] = {}  # robot -> newest parsed status + arrival time
        self.connects: list[float] = []
        self._lock = threading.Lock()
        self._client = None

    def start(self) -> MqttMonitor:
        from lwd_protocol.transport import make_mqtt_client, start_mqtt

        client = make_mqtt_client(self.endpoint)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client
        start_mqtt(client, self.endpoint)
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        self.connects.append(time.time())
        client.subscribe(MqttTopics.all_policy(), qos=MqttTopics.QOS)
        client.subscribe(MqttTopics.all_status(), qos=MqttTopics.QOS)

    def _on_message(self, client, userdata, msg) -> None:
        from lwd_protocol.announce import AnnouncementError, PolicyAnnouncement, RobotPolicyStatus

        now = time.time()
        if not msg.payload:
            return
        try:
            if msg.topic.endswith("/status"):
                status = RobotPolicyStatus.from_json(msg.payload)
                with self._lock:
                    self.statuses[status.robot_id] = {
                        "t": now,
                        "active_version": status.active_version,
                        "pending_version": status.pending_version,
                        "state": status.state,
                    }
            else:
                ann = PolicyAnnouncement.from_json(msg.payload)
                with self._lock:
                    self.announcements.append(
                        {
                            "t": now,
                            "kind": ann.kind,
                            "version": ann.version,
                            "seq": ann.seq,
                            "target": ann.target,
                            "retained": bool(msg.retain),
                        }
                    )
        except (AnnouncementError, ValueError):
            return

    def active_versions(self) -> dict[str, int]:
        with self._lock:
            return {robot: s["active_version"] for robot, s in self.statuses.items()}

    def distinct_orders(self) -> list[dict[str, Any]]:
        """Each order once (a retained re-delivery after a reconnect has the same seq), in arrival order."""
        seen: set[tuple[int, int]] = set()
        out = []
        with self._lock:
            for a in self.announcements:
                if (a["version"], a["seq"]) not in seen:
                    seen.add((a["version"], a["seq"]))
                    out.append(a)
        return out

    def stop(self) -> None:
        from lwd_protocol.transport import stop_mqtt

        if self._client is not None:
            with contextlib.suppress(Exception):
                stop_mqtt(self._client)
