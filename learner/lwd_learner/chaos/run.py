"""`lwd chaos`: kill -9 the cloud services, the learner and the robots' uplinks while the sim fleet works.

Brings up what `lwd flywheel` does on 127.0.0.1 (mosquitto, SeaweedFS, the Coordinator -- here as
its own process -- and N `lwd-robot` sim robots with the virtual teleoperator), plus the chaos
learner process (learner_proc.py). Once v1 is out and every controller streams commands, it
SIGKILLs at seeded random moments, one at a time: the broker, the object store, the Coordinator,
the learner (each left down 2-15 s, then restarted on the same ports and data) and each robot's
uplink child (lwd-robot respawns it; the respawn is measured). Afterwards it stops producing
(SIGINT to each recorder: the open episode is committed), waits for every spool to drain, and
checks:

- episodes produced == committed, each in exactly one snapshot version's delta. "Produced" is
  exact: the recorder logs ``committed <episode_id>.mcap`` right after the atomic rename into the
  spool (robot.log); the recorder's COMMITTED events seen over DDS are a cross-check;
- no corrupt snapshot: every object of every committed version exists, matches its sha256 and
  decodes; nothing quarantined; the versions' bookkeeping adds up;
- policy versions announced only ever increase, none twice; the learner resumed from its
  checkpoints; the last version is active on every robot;
- the robots' control loops never stalled: gaps > 0.5 s between consecutive joint_command stamps
  (the controller's own tick times; none allowed);
- time to recover per kill (restart -> first successful operation, see RECOVERY).

Results: JSON (seed, command, git commit, durations, per-event timeline) + a markdown summary.
Exit status 1 if any invariant fails. Everything started is stopped by PID, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lwd_learner.chaos.learner_proc import ChaosLearnerConfig, read_events, write_config
from lwd_learner.chaos.observe import FleetObserver, MqttMonitor, alive, node_pid
from lwd_learner.flywheel.fleet import FleetConfig, RosFleet, robot_ids
from lwd_learner.flywheel.stack import CloudStack
from lwd_learner.localstack import ManagedProcess
from lwd_learner.localstack.ros_env import apply_to_current_process
from lwd_learner.provenance import git_info
from lwd_learner.stop_signals import interrupt_on_stop_signals

KINDS = ("broker", "store", "coordinator", "learner", "uplink")
# what "recovered" means per kind: restart -> first successful operation of that component
RECOVERY = {
    "broker": "accept_s: an authenticated MQTT CONNACK from the restarted broker",
    "store": "answer_s: the restarted S3 API answers a bucket request",
    "coordinator": "next_commit_s: the restarted Coordinator commits the next snapshot version",
    "learner": "first_op_s: the restarted learner writes its next checkpoint or publishes",
    "uplink": "first_upload_s: the respawned uplink has announced (uploaded) its next episode",
}
HEADLINE = {k: v.split(":")[0] for k, v in RECOVERY.items()}
COMMITTED_LINE = re.compile(r"committed (\S+)\.mcap: (\d+) steps")


@dataclass(frozen=True)
class ChaosConfig:
    robots: int = 2
    duration_s: float = 240.0  # the chaos window
    seed: int = 805
    events_per_kind: int = 2  # uplink: at least once per robot too
    min_down_s: float = 2.0
    max_down_s: float = 15.0
    min_gap_s: float = 2.0  # quiet time between a restart and the next kill
    gap_threshold_s: float = 0.5  # a joint_command stamp gap longer than this is a control-loop stall
    dead_loop_s: float = 5.0  # no joint_command *arriving* for this long means the loop (or its robot) died
    max_episode_steps: int = 450  # 15 s episodes: many boundaries (policy swaps, commits)
    record_images: bool = True
    learner_nice: int = 10  # the cloud learner shares 2 cores with the robots here
    startup_timeout_s: float = 300.0
    recover_timeout_s: float = 120.0
    final_swap_timeout_s: float = 150.0
    drain_timeout_s: float = 240.0
    sweep_interval_s: float = 5.0  # Coordinator: find episodes whose announcement a broker kill lost
    sweep_grace_s: float = 10.0


@dataclass
class ChaosEvent:
    index: int
    kind: str
    target: str  # "broker", ..., or the robot id for an uplink
    at_s: float  # planned kill time, from the start of the chaos window
    down_s: float | None  # planned downtime (None: lwd-robot's respawn delay decides)
    killed_at: float = 0.0  # wall clock
    restarted_at: float = 0.0
    restart_error: str = ""
    measures: dict[str, float | None] = field(default_factory=dict)  # seconds after restarted_at
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def recover_s(self) -> float | None:
        return self.measures.get(HEADLINE[self.kind])


def plan_events(cfg: ChaosConfig, robots: list[str]) -> list[ChaosEvent]:
    """Seeded schedule: every kind events_per_kind times (uplinks round-robin over robots), shuffled,
    one per equal slot of the window at a random offset, with a random downtime that fits the slot."""
    rng = random.Random(cfg.seed)
    todo: list[tuple[str, str]] = []
    for kind in KINDS:
        if kind == "uplink":
            order = robots[:]
            rng.shuffle(order)
            n = max(cfg.events_per_kind, len(robots))
            todo += [("uplink", order[i % len(order)]) for i in range(n)]
        else:
            todo += [(kind, kind)] * cfg.events_per_kind
    rng.shuffle(todo)
    slot = cfg.duration_s / len(todo)
    events = []
    for i, (kind, target) in enumerate(todo):
        down = None
        room = slot - cfg.min_gap_s
        if kind != "uplink":
            down = rng.uniform(cfg.min_down_s, max(cfg.min_down_s, min(cfg.max_down_s, room - 1.0)))
        used = (down or 8.0) + cfg.min_gap_s  # an uplink is back after the respawn delay + start-up
        events.append(
            ChaosEvent(
                i,
                kind,
                target,
                round(i * slot + rng.uniform(0.0, max(0.0, slot - used)), 2),
                round(down, 2) if down is not None else None,
            )
        )
    return events


def _first(items, predicate: Callable[[Any], bool]) -> Any:
    return next((x for x in items if predicate(x)), None)


class ChaosRun:
    """One run: start() -> wait_ready() -> chaos() -> finish() -> verify(); stop() always."""

    def __init__(self, cfg: ChaosConfig, workdir: Path, say: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.say = say
        self.robots = robot_ids(cfg.robots)
        self.domain_base = random.Random(os.urandom(8)).randint(1, 101 - cfg.robots)  # per run, not per seed
        self.fleet_cfg = FleetConfig(
            robots=cfg.robots,
            tasks=("restocking",),
            max_episode_steps=cfg.max_episode_steps,
            takeover_stall_s=4.0,
            record_images=cfg.record_images,
            domain_base=self.domain_base,
        )
        self.stack = CloudStack(self.workdir, self.robots)
        self.fleet = RosFleet(self.fleet_cfg, self.stack, self.workdir)
        self.coordinator: ManagedProcess | None = None
        self.learner: ManagedProcess | None = None
        self.learner_cfg: ChaosLearnerConfig | None = None
        self.observer: FleetObserver | None = None
        self.monitor: MqttMonitor | None = None
        self.snapshots = None
        self.events = plan_events(cfg, self.robots)
        self.timeline: list[tuple[float, str, str]] = []
        self.t0 = time.time()
        self.marks: dict[str, float] = {"start": self.t0}
        self._probes: list[threading.Thread] = []

    # ------------------------------------------------------------------ bring-up
    def start(self) -> None:
        cfg = self.cfg
        apply_to_current_process(self.workdir / "ros_home", self.domain_base)
        self.stack.start()
        # the Coordinator must be killable on its own: replace the stack's in-process one by a process
        coord_cfg = dataclasses.replace(
            self.stack.coordinator.config,
            sweep_interval_s=cfg.sweep_interval_s,
            sweep_grace_s=cfg.sweep_grace_s,
            retry_max_s=2.0,
        )
        self.stack.coordinator.stop()
        self.stack.coordinator = None
        from lwd_learner.coordinator.runner import write_config as write_coordinator_config

        coord_json = write_coordinator_config(self.workdir / "coordinator" / "coordinator.json", coord_cfg)
        self.coordinator = ManagedProcess(
            "coordinator",
            [sys.executable, "-m", "lwd_learner.coordinator", "--config", str(coord_json)],
            self.workdir / "coordinator" / "coordinator.log",
        ).start()
        self.say(
            f"cloud stack up: mqtt {self.stack.broker.port}, s3 {self.stack.store.endpoint}, coordinator pid "
            f"{self.coordinator.pid}"
        )
        self.learner_cfg = ChaosLearnerConfig(
            workdir=self.workdir / "learner",
            db_path=self.stack.coordinator_db,
            s3=self.stack.store.s3_endpoint("learner"),
            mqtt=self.stack.broker.endpoint("learner", client_id="", clean_session=True),
            admin_key_file=self.stack.admin_key_file,
            tasks=self.fleet_cfg.tasks,
            seed=cfg.seed,
        )
        learner_json = write_config(self.workdir / "learner" / "learner.json", self.learner_cfg)
        argv = [sys.executable, "-m", "lwd_learner.chaos.learner_proc", "--config", str(learner_json)]
        if cfg.learner_nice:
            argv = ["nice", "-n", str(cfg.learner_nice), *argv]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.learner = ManagedProcess("learner", argv, self.workdir / "learner" / "learner.log", env=env).start()
        self.fleet.start()
        self.say(
            f"fleet up: {', '.join(self.robots)} (ROS domains {self.domain_base}..), learner pid {self.learner.pid}"
        )
        from lwd_learner.coordinator.snapshot_store import SqliteSnapshotReader

        self.snapshots = SqliteSnapshotReader(self.stack.coordinator_db)
        self.observer = FleetObserver({r: self.domain_base + i for i, r in enumerate(self.robots)}).start()
        monitor_ep = dataclasses.replace(
            self.stack.mqtt("monitor"), reconnect_min_s=1.0, reconnect_max_s=2.0, keepalive_s=5
        )
        self.monitor = MqttMonitor(monitor_ep).start()

    def learner_events(self) -> list[dict[str, Any]]:
        return read_events(self.learner_cfg.events_file) if self.learner_cfg else []

    def wait_ready(self) -> None:
        """v1 published and checkpointed, every controller streaming joint commands, every uplink reporting."""
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while time.monotonic() < deadline:
            events = self.learner_events()
            learner_ok = any(e["event"] == "published" for e in events) and any(
                e["event"] == "checkpoint" for e in events
            )
            recent = time.time() - 2.0
            fleet_ok = all(d.commands and d.commands[-1][0] > recent and d.uplink for d in self.observer.data.values())
            if learner_ok and fleet_ok:
                self.marks["ready"] = time.time()
                self.say(f"ready after {self.marks['ready'] - self.t0:.0f} s: v1 out, every robot commanding")
                return
            for robot, proc in self.fleet.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{robot}'s lwd-robot exited with {proc.returncode} during start-up")
            if not self.learner.alive():
                raise RuntimeError(f"learner exited during start-up:\n{self.learner.log_tail()}")
            time.sleep(1.0)
        raise TimeoutError(
            f"not ready after {self.cfg.startup_timeout_s:.0f} s: learner events "
            f"{[e['event'] for e in self.learner_events()]}, commands "
            f"{ {r: len(d.commands) for r, d in self.observer.data.items()} }"
        )

    # ------------------------------------------------------------------ chaos
    def _mark(self, what: str, target: str) -> float:
        now = time.time()
        self.timeline.append((round(now - self.t0, 2), what, target))
        self.say(f"[{now - self.marks.get('chaos', now):6.1f} s] {what} {target}")
        return now

    def chaos(self) -> None:
        self.marks["chaos"] = time.time()
        for ev in self.events:
            wait = self.marks["chaos"] + ev.at_s - time.time()
            if wait > 0:
                time.sleep(wait)
            if ev.kind == "uplink":
                self._kill_uplink(ev)
            else:
                self._kill_service(ev)
        time.sleep(max(0.0, self.marks["chaos"] + self.cfg.duration_s - time.time()))  # the whole window
        self.marks["chaos_end"] = time.time()

    def _kill_service(self, ev: ChaosEvent) -> None:
        part = {
            "broker": self.stack.broker,
            "store": self.stack.store,
            "coordinator": self.coordinator,
            "learner": self.learner,
        }[ev.kind]
        before = {
            "version": self.snapshots.current_version(),
            "coord_log": self._size(self.coordinator.log_path),
        }
        proc = part.process if ev.kind in ("broker", "store") else part
        ev.notes["was_running"] = proc.alive()  # False: it died on its own since its last start
        part.kill()
        ev.killed_at = self._mark("kill -9", ev.target)
        time.sleep(ev.down_s or 0.0)
        ev.restarted_at = self._mark("restart", ev.target)
        for attempt in range(1, 4):
            try:
                if ev.kind in ("broker", "store"):
                    part.restart()
                else:
                    part.start()
                ev.restart_error = ""
                ev.notes["restart_attempts"] = attempt
                break
            except Exception as exc:  # a port still held, a slow start: try again, then give up loudly
                ev.restart_error = f"attempt {attempt}: {type(exc).__name__}: {exc}"[:400]
                self.say(f"restart of {ev.target} failed: {ev.restart_error}")
                time.sleep(2.0)
        if ev.kind == "store":
            ev.measures["answer_s"] = round(time.time() - ev.restarted_at, 3)  # start() returns once S3 answers
        if ev.kind == "broker":
            ev.measures["accept_s"] = self._broker_accepts(ev.restarted_at)
        checks: dict[str, Callable[[], float | None]] = {}
        if ev.kind in ("broker", "store", "coordinator"):
            checks["next_commit_s"] = lambda: (
                time.time() if self.snapshots.current_version() > before["version"] else None
            )
        if ev.kind == "broker":
            checks["uplinks_reconnected_s"] = lambda: self._uplinks_connected_after(ev.restarted_at)
        if ev.kind == "coordinator":
            checks["ready_s"] = lambda: self._log_after(
                self.coordinator.log_path, before["coord_log"], "subscribed to episode announcements"
            )
        if ev.kind == "learner":
            checks["ready_s"] = lambda: self._learner_event_after(ev.restarted_at, ("resumed", "fresh"))
            checks["first_op_s"] = lambda: self._learner_event_after(ev.restarted_at, ("checkpoint", "published"))
        self._probe(ev, checks)

    def _kill_uplink(self, ev: ChaosEvent) -> None:
        parent = self.fleet.procs[ev.target].pid
        old = node_pid(parent, "uplink")
        if old is None:
            ev.restart_error = "no uplink process found under lwd-robot"
            return
        os.killpg(old, signal.SIGKILL)
        ev.killed_at = self._mark("kill -9", f"uplink:{ev.target}")
        ev.notes["old_pid"] = old
        deadline = time.monotonic() + 30.0
        new = None
        while time.monotonic() < deadline:
            new = node_pid(parent, "uplink")
            if new is not None and new != old:
                break
            time.sleep(0.05)
        if new is None or new == old:
            ev.restart_error = "lwd-robot did not respawn the uplink within 30 s"
            return
        ev.restarted_at = self._mark("respawned", f"uplink:{ev.target}")
        ev.notes["new_pid"] = new
        ev.notes["old_pid_gone"] = not alive(old)
        ev.measures["respawn_s"] = round(ev.restarted_at - ev.killed_at, 3)
        obs = self.observer.data[ev.target]
        after = ev.restarted_at

        def status_after(pred: Callable[[dict], bool]) -> float | None:
            hit = _first(list(obs.uplink), lambda item: item[0] > after and pred(item[1]))
            return hit[0] if hit else None

        self._probe(
            ev,
            {
                "connected_s": lambda: status_after(lambda s: bool(s.get("mqtt_connected"))),
                "first_upload_s": lambda: status_after(lambda s: int(s.get("announced", 0)) >= 1),
            },
        )

    def _probe(self, ev: ChaosEvent, checks: dict[str, Callable[[], float | None]]) -> None:
        """Poll each check in the background until it returns the time it happened (or time runs out)."""

        def killed_again() -> bool:  # a later kill of the same target ends this recovery window
            return any(e.index > ev.index and e.target == ev.target and e.killed_at for e in self.events)

        def run() -> None:
            deadline = time.monotonic() + self.cfg.recover_timeout_s
            left = dict(checks)
            for name in left:
                ev.measures.setdefault(name, None)
            while left and time.monotonic() < deadline:
                if killed_again():
                    ev.notes["killed_again_before"] = sorted(left)
                    break
                for name, check in list(left.items()):
                    try:
                        when = check()
                    except Exception:  # e.g. the DB mid-commit: ask again
                        when = None
                    if when is not None:
                        ev.measures[name] = round(max(0.0, when - ev.restarted_at), 3)
                        del left[name]
                time.sleep(0.1)

        thread = threading.Thread(target=run, name=f"probe-{ev.index}", daemon=True)
        thread.start()
        self._probes.append(thread)

    def _broker_accepts(self, since: float) -> float | None:
        from lwd_protocol.transport import connect_mqtt, make_mqtt_client, stop_mqtt

        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            ep = self.stack.mqtt("monitor")
            try:
                client = connect_mqtt(make_mqtt_client(ep), ep, timeout_s=5.0)
            except Exception:
                time.sleep(0.05)
                continue
            at = time.time()
            stop_mqtt(client)
            return round(at - since, 3)
        return None

    def _uplinks_connected_after(self, since: float) -> float | None:
        times = []
        for data in self.observer.data.values():
            hit = _first(list(data.uplink), lambda item: item[0] > since and item[1].get("mqtt_connected"))
            if hit is None:
                return None
            times.append(hit[0])
        return max(times)

    def _learner_event_after(self, since: float, kinds: tuple[str, ...]) -> float | None:
        hit = _first(self.learner_events(), lambda e: e["t"] > since and e["event"] in kinds)
        return hit["t"] if hit else None

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    @staticmethod
    def _log_after(path: Path, offset: int, text: str) -> float | None:
        with open(path, "rb") as f:
            f.seek(offset)
            return time.time() if text.encode() in f.read() else None

    # ------------------------------------------------------------------ wind down
    def wait_probes(self) -> None:
        deadline = time.monotonic() + self.cfg.recover_timeout_s
        for thread in self._probes:
            thread.join(max(0.0, deadline - time.monotonic()))

    def finish(self) -> dict[str, Any]:
        """Stop the learner (final version fixed), wait for it on every robot, stop the recorders, drain."""
        out: dict[str, Any] = {}
        self.wait_probes()
        self.marks["wind_down"] = time.time()
        out["services_up"] = {
            "broker": self.stack.broker.process.alive(),
            "store": self.stack.store.process.alive(),
            "coordinator": self.coordinator.alive(),
            "learner": self.learner.alive(),
        }
        code = self.learner.stop(timeout_s=90.0)
        out["learner_exit"] = code
        published = [e["version"] for e in self.learner_events() if e["event"] == "published"]
        final = max(published) if published else 0
        out["final_version"] = final
        deadline = time.monotonic() + self.cfg.final_swap_timeout_s
        while time.monotonic() < deadline:
            active = self.monitor.active_versions()
            if all(active.get(r) == final for r in self.robots):
                break
            time.sleep(1.0)
        out["active"] = self.monitor.active_versions()
        self.marks["swapped"] = time.time()
        # stop producing: SIGINT each recorder (it commits the open episode and exits; not respawned)
        self.marks["measure_end"] = time.time()
        recorders = {r: node_pid(self.fleet.procs[r].pid, "recorder") for r in self.robots}
        for pid in recorders.values():
            if pid is not None:
                os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and any(p is not None and alive(p) for p in recorders.values()):
            time.sleep(0.2)
        out["recorders_stopped"] = {r: p is not None and not alive(p) for r, p in recorders.items()}
        self.marks["recorders_stopped"] = time.time()
        produced = self.produced()

        def drained() -> bool:
            if any(self.spool_leftovers().values()):
                return False
            v = self.snapshots.current_version()
            committed = {e.episode_id for e in self.snapshots.get_snapshot(v)} if v else set()
            return {e for ids in produced.values() for e in ids} <= committed

        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while time.monotonic() < deadline and not drained():
            time.sleep(0.5)
        out["drained"] = drained()
        self.marks["drained"] = time.time()
        return out

    def produced(self) -> dict[str, list[str]]:
        """Per robot, the episode ids its recorder committed into the spool (robot.log, in order)."""
        result = {}
        for robot in self.robots:
            text = self.fleet.logs[robot].read_text(errors="replace")
            result[robot] = [m.group(1) for m in COMMITTED_LINE.finditer(text)]
        return result

    def spool_leftovers(self) -> dict[str, list[str]]:
        out = {}
        for robot in self.robots:
            spool = self.fleet.robot_dir(robot) / "spool"
            names = [p.name for p in spool.glob("*.mcap*")]
            names += (
                [f"rejected/{p.name}" for p in (spool / "rejected").glob("*")] if (spool / "rejected").is_dir() else []
            )
            out[robot] = sorted(names)
        return out

    # ------------------------------------------------------------------ checks
    def verify(self, wind_down: dict[str, Any]) -> dict[str, Any]:
        from lwd_learner.replay_reader import ReaderConfig, SnapshotReplayReader

        t_verify = time.time()
        inv: dict[str, dict[str, Any]] = {}

        def check(name: str, ok: bool, **detail: Any) -> None:
            inv[name] = {"ok": bool(ok), **detail}

        # --- episodes: produced == committed, each exactly once
        produced = self.produced()
        owner = {e: r for r, ids in produced.items() for e in ids}
        produced_ids = [e for ids in produced.values() for e in ids]
        db = self.snapshots
        newest = db.current_version()
        infos = db.list_snapshots()
        in_versions: Counter[str] = Counter()
        total, chain_ok = 0, True
        for info in infos:
            delta = db.get_delta(info.version - 1, info.version)
            total += len(delta)
            chain_ok &= info.parent == info.version - 1 and info.added == len(delta) > 0 and info.num_episodes == total
            in_versions.update(e.episode_id for e in delta)
        chain_ok &= [i.version for i in infos] == list(range(1, newest + 1))
        snapshot = db.get_snapshot(newest) if newest else []
        committed = {e.episode_id for e in snapshot}
        missing = sorted(set(produced_ids) - committed)
        phantom = sorted(committed - set(produced_ids))
        twice = sorted(e for e, n in in_versions.items() if n > 1)
        wrong_robot = sorted(e.episode_id for e in snapshot if owner.get(e.episode_id, e.robot_id) != e.robot_id)
        check(
            "produced_equals_committed",
            not missing and not phantom and len(produced_ids) == len(set(produced_ids)),
            produced=len(produced_ids),
            committed=len(committed),
            missing=missing[:10],
            phantom=phantom[:10],
        )
        check("each_committed_exactly_once", not twice and set(in_versions) == committed, duplicated=twice[:10])
        check("snapshot_bookkeeping", chain_ok, versions=newest)
        check("episode_owner_matches", not wrong_robot, wrong=wrong_robot[:10])
        leftovers = self.spool_leftovers()
        check("spools_drained", wind_down.get("drained", False) and not any(leftovers.values()), leftovers=leftovers)
        dds = {r: [e for _, e in self.observer.data[r].committed] for r in self.robots}
        dds_unknown = sorted({e for ids in dds.values() for e in ids} - set(produced_ids))
        check(
            "dds_commit_events_in_log",
            not dds_unknown,
            unknown=dds_unknown[:10],
            dds_seen=sum(len(set(v)) for v in dds.values()),
        )

        # --- snapshots: every object of every version exists, matches sha256, decodes
        by_id = {e.episode_id: e for e in snapshot}
        corrupt_versions, drifted = [], []
        for info in infos:
            recs = db.get_snapshot(info.version)
            if any(by_id.get(r.episode_id) is None or by_id[r.episode_id].sha256 != r.sha256 for r in recs):
                drifted.append(info.version)
        bad: dict[str, str] = {}
        with SnapshotReplayReader.open(
            self.stack.coordinator_db, self.stack.store.s3_endpoint("admin"), ReaderConfig(retries=3, load_images=True)
        ) as reader:
            for item in reader.load(snapshot):
                if not item.ok:
                    bad[item.record.episode_id] = f"{item.status.value}: {item.error}"[:200]
                elif item.episode.num_steps != item.record.num_steps:
                    bad[item.record.episode_id] = "step count differs from the record"
        for info in infos:
            if info.version in drifted or any(r.episode_id in bad for r in db.get_snapshot(info.version)):
                corrupt_versions.append(info.version)
        quarantined = db.quarantined()
        check(
            "no_corrupt_snapshot",
            not corrupt_versions,
            corrupt_versions=corrupt_versions,
            objects_checked=len(snapshot),
            bad=dict(list(bad.items())[:10]),
        )
        check("nothing_quarantined", not quarantined, reasons=[q.reason for q in quarantined][:10])

        # --- learner: versions only increase, none twice; resumes; final version everywhere
        ev = self.learner_events()
        published = [e["version"] for e in ev if e["event"] == "published"]
        orders = [o for o in self.monitor.distinct_orders() if o["target"] == "fleet"]
        order_versions = [o["version"] for o in orders]
        increasing = all(b > a for a, b in itertools.pairwise(published))
        orders_increasing = all(
            b["version"] > a["version"] and b["seq"] > a["seq"] for a, b in itertools.pairwise(orders)
        )
        stored = self._stored_versions()
        check(
            "policy_versions_strictly_increasing",
            increasing and orders_increasing and published == sorted(set(published)),
            published=published,
            announced_seen=order_versions,
        )
        check("published_versions_in_store", set(published) <= set(stored), stored=stored)
        resumes = [e for e in ev if e["event"] == "resumed"]
        learner_kills = sum(1 for e in self.events if e.kind == "learner" and e.killed_at)
        check(
            "learner_resumed_after_every_kill",
            len(resumes) >= learner_kills,
            resumes=len(resumes),
            kills=learner_kills,
            fresh_starts=sum(1 for e in ev if e["event"] == "fresh"),
        )
        check("learner_stopped_cleanly", wind_down.get("learner_exit") == 0, exit_code=wind_down.get("learner_exit"))
        final = wind_down.get("final_version", 0)
        active = wind_down.get("active", {})
        check(
            "final_version_active_on_every_robot",
            final > 0 and all(active.get(r) == final for r in self.robots),
            final_version=final,
            active=active,
        )

        # --- robots: control loop never stalled
        t0, t1 = self.marks["chaos"], self.marks["measure_end"]
        loops = {r: self.observer.command_stats(r, t0, t1, self.cfg.gap_threshold_s) for r in self.robots}
        check(
            "no_control_loop_gap",
            all(
                s["gaps_over_threshold"] == 0 and s["ticks"] > 0 and s["max_arrival_gap_s"] <= self.cfg.dead_loop_s
                for s in loops.values()
            ),
            threshold_s=self.cfg.gap_threshold_s,
            dead_loop_s=self.cfg.dead_loop_s,
        )

        # --- chaos itself happened, and every component came back
        kinds = Counter(e.kind for e in self.events if e.killed_at and not e.restart_error)
        need = {k: self.cfg.events_per_kind for k in KINDS}
        need["uplink"] = max(self.cfg.events_per_kind, self.cfg.robots)
        uplinks_per_robot = Counter(e.target for e in self.events if e.kind == "uplink" and e.killed_at)
        check(
            "every_kind_killed_and_restarted",
            all(kinds[k] >= n for k, n in need.items()) and all(uplinks_per_robot[r] >= 1 for r in self.robots),
            kills=dict(kinds),
        )
        # a recovery cut short by the next kill of the same target is reported, not failed: that kill's own
        # recovery (and in the end the last one's) must still happen
        cut = [
            f"{e.index}:{e.target}" for e in self.events if e.recover_s is None and e.notes.get("killed_again_before")
        ]
        unrecovered = [
            f"{e.index}:{e.target}" for e in self.events if e.recover_s is None and f"{e.index}:{e.target}" not in cut
        ]
        check("every_kill_recovered", not unrecovered, unrecovered=unrecovered, cut_short_by_next_kill=cut)
        check("robots_alive", all(self.fleet.alive().values()), alive=self.fleet.alive())
        died = [f"{e.index}:{e.target}" for e in self.events if e.notes.get("was_running") is False]
        died += [name for name, up in wind_down.get("services_up", {}).items() if not up]
        check("no_unexpected_exit", not died, died_on_their_own=died)

        recovery = {}
        for kind in KINDS:
            values = [e.recover_s for e in self.events if e.kind == kind and e.recover_s is not None]
            recovery[kind] = {
                "metric": RECOVERY[kind],
                "n": sum(1 for e in self.events if e.kind == kind),
                "cut_short_by_next_kill": sum(
                    1 for e in self.events if e.kind == kind and f"{e.index}:{e.target}" in cut
                ),
                "values_s": values,
                "median_s": round(statistics.median(values), 3) if values else None,
                "max_s": max(values) if values else None,
            }
        per_robot = {
            r: {
                "produced": len(produced[r]),
                "committed": sum(1 for e in snapshot if e.robot_id == r),
                "dds_commit_events": len(set(dds[r])),
            }
            for r in self.robots
        }
        stats = db.robot_stats()
        last = _first(reversed(ev), lambda e: e["event"] == "stopped")
        stopped = None
        if last is not None:
            stopped = {
                "snapshot": last["snapshot"],
                "snapshot_episodes": db.snapshot_info(last["snapshot"]).num_episodes if last["snapshot"] else 0,
                "online_episodes_loaded": last["online_episodes"],
                "unusable": sum(1 for e in ev if e["event"] == "episode_unusable"),
            }
        coord_log = self.coordinator.log_tail(50_000_000)
        self.marks["verified"] = time.time()
        return {
            "ok": all(v["ok"] for v in inv.values()),
            "invariants": inv,
            "episodes": {
                "produced": len(produced_ids),
                "committed": len(committed),
                "per_robot": per_robot,
                "duplicates_deduped_by_coordinator": sum(s.duplicates for s in stats.values()),
                "recovered_by_sweep": coord_log.count("sweep recovered never-announced episode"),
                "definition": "produced = `committed <id>.mcap` lines the recorder logs after the atomic rename "
                "into the spool (robot.log); committed = ids in the newest snapshot, each in exactly one delta",
            },
            "snapshots": {
                "versions": newest,
                "objects_checked": len(snapshot),
                "corrupt": len(corrupt_versions),
                "quarantined": len(quarantined),
            },
            "learner": {
                "published": published,
                "announced_seen_by_monitor": order_versions,
                "publish_failures": sum(1 for e in ev if e["event"] == "publish_failed"),
                "checkpoints": sum(1 for e in ev if e["event"] == "checkpoint"),
                "resumes": [
                    {k: e.get(k) for k in ("step", "snapshot", "published_version", "reloaded")} for e in resumes
                ],
                "starts": sum(1 for e in ev if e["event"] == "start"),
                "final_version": final,
                "active_on_robots": active,
                "stopped": stopped,  # its snapshot and how many of that snapshot's episodes it held at the end
                "exit_code": wind_down.get("learner_exit"),
            },
            "control_loop": loops,
            "recovery": recovery,
            "verify_s": round(time.time() - t_verify, 1),
        }

    def _stored_versions(self) -> list[int]:
        from lwd_learner.publish import PolicyPublisher, PublisherConfig

        with PolicyPublisher(PublisherConfig(self.stack.store.s3_endpoint("admin"), None, "chaos"), None) as pub:
            return [v.version for v in pub.list_versions() if v.complete]

    # ------------------------------------------------------------------ teardown
    def stop(self) -> None:
        """Everything this run started, by PID; each step even if an earlier one fails."""
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("monitor", lambda: self.monitor and self.monitor.stop()),
            ("observer", lambda: self.observer and self.observer.stop()),
            ("learner", lambda: self.learner and self.learner.stop(timeout_s=30.0)),
            ("fleet", self.fleet.stop),
            ("coordinator", lambda: self.coordinator and self.coordinator.stop()),
            ("snapshots", lambda: self.snapshots and self.snapshots.close()),
            ("stack", self.stack.stop),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                self.say(f"stopping {name} failed: {type(exc).__name__}: {exc}")

    def event_rows(self) -> list[dict[str, Any]]:
        rows = []
        for e in self.events:
            base = self.marks.get("chaos", self.t0)
            rows.append(
                {
                    "index": e.index,
                    "kind": e.kind,
                    "target": e.target,
                    "planned_at_s": e.at_s,
                    "planned_down_s": e.down_s,
                    "killed_at_s": round(e.killed_at - base, 2) if e.killed_at else None,
                    "restarted_at_s": round(e.restarted_at - base, 2) if e.restarted_at else None,
                    "down_s": round(e.restarted_at - e.killed_at, 2) if e.restarted_at and e.killed_at else None,
                    "recover_s": e.recover_s,
                    "measures": e.measures,
                    "restart_error": e.restart_error,
                    "notes": e.notes,
                }
            )
        return rows


# ---------------------------------------------------------------------- report
def write_markdown(path: Path, report: dict[str, Any]) -> None:
    r = report
    lines = [
        "# Chaos run (kill -9) with the simulated ROS 2 fleet",
        "",
        f"`{r['command']}` — seed {r['seed']}, git {r['git']['commit'][:10]}{' (dirty)' if r['git']['dirty'] else ''},"
        f" {r['started_at']}, {r['host']['cpus']} CPUs (load avg at start {r['host']['loadavg_start']}).",
        "",
        f"**Result: {'PASS' if r.get('ok') else 'FAIL'}** — {r['config']['robots']} robots, "
        f"{r['durations_s'].get('chaos', 0):.0f} s chaos window, {len(r['events'])} kills, "
        f"total {r['durations_s'].get('total', 0):.0f} s.",
        "",
    ]
    if "error" in r:
        lines += [f"Run aborted: `{r['error']}`", ""]
    if "invariants" in r:
        ep, sn, le = r["episodes"], r["snapshots"], r["learner"]
        lines += [
            "| check | result |",
            "|---|---|",
            f"| episodes produced / committed (each exactly once) | {ep['produced']} / {ep['committed']} |",
            f"| snapshot versions / corrupt / objects checked | {sn['versions']} / {sn['corrupt']} / "
            f"{sn['objects_checked']} |",
            f"| quarantined | {sn['quarantined']} |",
            f"| duplicates de-duplicated by the Coordinator / recovered by its sweep | "
            f"{ep['duplicates_deduped_by_coordinator']} / {ep['recovered_by_sweep']} |",
            f"| policy versions published (strictly increasing) | {le['published']} |",
            f"| learner starts / checkpoint resumes / publish retries | {le['starts']} / {len(le['resumes'])} / "
            f"{le['publish_failures']} |",
            f"| final version / active on robots | v{le['final_version']} / {le['active_on_robots']} |",
            f"| learner at its stop: snapshot / its episodes loaded | {(le.get('stopped') or {}).get('snapshot')} / "
            f"{(le.get('stopped') or {}).get('online_episodes_loaded')} of "
            f"{(le.get('stopped') or {}).get('snapshot_episodes')} |",
            "",
            "Control loop (`joint_command` during chaos + wind-down; gaps between the commands' stamps, "
            "i.e. on the controller's clock; the largest gap between arrivals at the observer beside):",
            "",
            f"| robot | ticks | rate Hz | max gap s | p99 gap s | gaps > {r['config']['gap_threshold_s']} s "
            "| max arrival gap s |",
            "|---|---|---|---|---|---|---|",
        ]
        for robot, s in r["control_loop"].items():
            lines.append(
                f"| {robot} | {s['ticks']} | {s['rate_hz']} | {s['max_gap_s']} | {s['p99_gap_s']} | "
                f"{s['gaps_over_threshold']} | {s.get('max_arrival_gap_s')} |"
            )
        lines += [
            "",
            "Time to recover (restart → first successful operation):",
            "",
            "| component | kills | median s | max s | measured as |",
            "|---|---|---|---|---|",
        ]
        for kind, rec in r["recovery"].items():
            lines.append(f"| {kind} | {rec['n']} | {rec['median_s']} | {rec['max_s']} | {rec['metric']} |")
        lines += ["", "Invariants:", ""]
        lines += [f"- {'ok  ' if v['ok'] else 'FAIL'} {k}" for k, v in r["invariants"].items()]
    lines += [
        "",
        "Timeline (s from the start of the chaos window):",
        "",
        "| # | target | killed | back | down s | recover s | other measures |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in r["events"]:
        others = ", ".join(f"{k} {v}" for k, v in e["measures"].items() if k != HEADLINE[e["kind"]])
        if e["notes"].get("killed_again_before"):
            others += " (killed again before it recovered)"
        target = e["target"] if e["kind"] != "uplink" else f"uplink {e['target']}"
        lines.append(
            f"| {e['index']} | {target} | {e['killed_at_s']} | {e['restarted_at_s']} | {e['down_s']} | "
            f"{e['recover_s']} | {others}{' ERROR ' + e['restart_error'] if e['restart_error'] else ''} |"
        )
    lines += [
        "",
        "Services and the learner are restarted by this run after the planned downtime; an uplink is not: "
        "`lwd-robot` respawns it (NodeSpec respawn, 2 s respawn_delay), so its downtime is the measured respawn.",
        "",
        "Raw numbers: the JSON file next to this one.",
        "",
    ]
    path.write_text("\n".join(lines))


def run(cfg: ChaosConfig, workdir: Path, out: Path | None, command: str, say: Callable[[str], None] = print) -> dict:
    """The whole run; returns the report (also written to `out` and its .md sibling when given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    chaos = ChaosRun(cfg, workdir, say)
    report: dict[str, Any] = {
        "kind": "lwd-chaos",
        "seed": cfg.seed,
        "command": command,
        "git": git_info(),
        "started_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]},
        "workdir": str(workdir),
        "config": asdict(cfg),
        "recovery_definitions": RECOVERY,
    }
    try:
        chaos.start()
        chaos.wait_ready()
        say(f"chaos window {cfg.duration_s:.0f} s, {len(chaos.events)} kills (seed {cfg.seed})")
        chaos.chaos()
        say("chaos over: stopping the learner, waiting for the final policy, stopping the recorders, draining")
        wind_down = chaos.finish()
        say("verifying")
        report.update(chaos.verify(wind_down))
        report["wind_down"] = wind_down
    except KeyboardInterrupt:
        report.update(ok=False, error="interrupted")
    except Exception as exc:
        report.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        marks = dict(chaos.marks)
        chaos.stop()
        marks["stopped"] = time.time()

        def span(a: str, b: str) -> float | None:
            return round(marks[b] - marks[a], 1) if a in marks and b in marks else None

        report["durations_s"] = {
            "startup": span("start", "ready"),
            "chaos": span("chaos", "chaos_end"),
            "final_swap": span("wind_down", "swapped"),
            "drain": span("recorders_stopped", "drained"),
            "verify": span("drained", "verified"),
            "total": span("start", "stopped"),
        }
        report["events"] = chaos.event_rows()
        report["timeline"] = chaos.timeline
        report["host"]["loadavg_end"] = os.getloadavg()[0]
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1, default=str))
            write_markdown(out.with_suffix(".md"), report)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lwd chaos", description=__doc__.splitlines()[0])
    ap.add_argument("--robots", type=int, default=ChaosConfig.robots)
    ap.add_argument("--duration-s", type=float, default=ChaosConfig.duration_s, help="chaos window")
    ap.add_argument("--seed", type=int, default=ChaosConfig.seed)
    ap.add_argument("--events-per-kind", type=int, default=ChaosConfig.events_per_kind)
    ap.add_argument("--max-down-s", type=float, default=ChaosConfig.max_down_s)
    ap.add_argument("--no-images", action="store_true", help="robots record no camera images (lighter)")
    ap.add_argument("--workdir", type=Path, help="services, robots, learner (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=Path("learner/bench/results/chaos.json"), help="JSON (+ .md beside)")
    args = ap.parse_args(argv)
    cfg = ChaosConfig(
        robots=args.robots,
        duration_s=args.duration_s,
        seed=args.seed,
        events_per_kind=args.events_per_kind,
        max_down_s=args.max_down_s,
        record_images=not args.no_images,
    )
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lwd-chaos-"))
    interrupt_on_stop_signals()
    command = " ".join(["lwd chaos", *(argv if argv is not None else sys.argv[1:])])
    print(f"LWD chaos: workdir {workdir}", flush=True)
    report = run(cfg, workdir, args.out, command, say=lambda m: print(m, flush=True))
    summary = {k: report.get(k) for k in ("ok", "error")}
    if "episodes" in report:
        summary.update(
            produced=report["episodes"]["produced"],
            committed=report["episodes"]["committed"],
            failed=[k for k, v in report["invariants"].items() if not v["ok"]],
        )
    print(json.dumps(summary), flush=True)
    print(f"results: {args.out} and {args.out.with_suffix('.md')}", flush=True)
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
