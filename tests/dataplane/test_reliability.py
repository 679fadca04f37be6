"""kill -9 chaos (issue #6, point 7): robots keep producing while every data-plane process dies and comes back.

Three simulated robots each run two processes, as on a real robot: a producer (a control loop
ticking at 30 Hz, and beside it a recorder committing a small episode into the spool every
~0.3 s) and an uplink bridge (EpisodeUplink). The Coordinator runs as its own
process (`python -m lwd_learner.coordinator`), next to a real mosquitto and a real SeaweedFS.
At seeded random moments the test SIGKILLs an uplink, the broker, the object store or the
Coordinator (each kind at least twice), leaves it down for a random while, and restarts it.
A learner thread in the test process follows the snapshots with the replay reader throughout.

At the end: every produced episode is in exactly one committed version's delta (and so, once,
in the newest cumulative snapshot), nothing else is; every version's bookkeeping adds up; every
object of the newest snapshot downloads, matches its sha256 and decodes; nothing is quarantined;
the learner loaded every episode; and each producer's loop ticked between every two chaos events.

Run with `-s` to see the timeline and counts. Set LWD_CHAOS_SEED to replay another schedule.
This file is also the robots' program: `python test_reliability.py producer|uplink CONFIG.json`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

if __name__ == "__main__":  # started by the test as a robot/uplink process: make tests/helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.dataplane import wait_until

HERE = Path(__file__).resolve().parent
SEED = 6_0707
ROBOTS = ("robot_01", "robot_02", "robot_03")
TICK_HZ = 30.0
EPISODE_PERIOD_S = 0.3
EVENTS_PER_KIND = 2
KINDS = ("uplink", "broker", "store", "coordinator")


# --------------------------------------------------------------------------- robot processes
def _write_json_atomic(path: Path, body: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_producer(cfg: dict) -> None:
    """The robot: a 30 Hz control loop, and beside it a recorder committing an episode every period.

    As on a real robot they are separate (here threads, there processes): the control loop never
    waits for the disk, the recorder's fsyncs never stall it.
    """
    from helpers.dataplane import write_episode

    stop = _stop_event()
    spool, status = Path(cfg["spool"]), Path(cfg["status"])
    rng = random.Random(cfg["seed"])
    episodes = [0]

    def recorder() -> None:
        with open(cfg["produced"], "a") as produced:
            while not stop.wait(cfg["episode_period_s"]):
                path = write_episode(spool, cfg["robot_id"], steps=rng.randint(3, 12))
                produced.write(path.name.removesuffix(".mcap") + "\n")
                produced.flush()
                episodes[0] += 1

    rec = threading.Thread(target=recorder, name="recorder")
    rec.start()
    ticks = 0
    max_gap_s = 0.0
    period = 1.0 / TICK_HZ
    last = next_tick = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        max_gap_s, last = max(max_gap_s, now - last), now
        ticks += 1
        _write_json_atomic(status, {"ticks": ticks, "episodes": episodes[0], "max_gap_s": max_gap_s})
        next_tick += period
        stop.wait(max(0.0, next_tick - time.monotonic()))
    rec.join()
    _write_json_atomic(status, {"ticks": ticks, "episodes": episodes[0], "max_gap_s": max_gap_s, "final": True})


def run_uplink(cfg: dict) -> None:
    from lwd_fleet.uplink import EpisodeUplink, UplinkConfig
    from lwd_protocol.transport import MqttEndpoint, S3Endpoint

    stop = _stop_event()
    uplink = EpisodeUplink(
        UplinkConfig(
            robot_id=cfg["robot_id"],
            spool_dir=Path(cfg["spool"]),
            mqtt=MqttEndpoint(**cfg["mqtt"]),
            s3=S3Endpoint(**cfg["s3"]),
            poll_interval_s=0.1,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
            puback_timeout_s=3.0,
        )
    )
    try:
        uplink.run_forever(stop)
    finally:
        uplink.close()


# --------------------------------------------------------------------------- the test
class _Learner(threading.Thread):
    """Follows the snapshots like a training loop: advance between 'steps', load each delta."""

    def __init__(self, db: Path, s3_endpoint):
        super().__init__(name="chaos-learner", daemon=True)
        self.db, self.s3_endpoint = db, s3_endpoint
        self.loaded: Counter[str] = Counter()
        self.failed: dict[str, str] = {}
        self.advances = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.reader = None

    def run(self) -> None:
        from lwd_learner.replay_reader import ReaderConfig, SnapshotReplayReader

        try:
            while not self.db.exists() and not self.stop.wait(0.1):
                pass
            cfg = ReaderConfig(retries=60, backoff_initial_s=0.1, backoff_max_s=1.0, load_images=False)
            self.reader = SnapshotReplayReader.open(self.db, self.s3_endpoint, cfg)
            while not self.stop.is_set():
                self.step()
                self.stop.wait(0.2)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def step(self) -> None:
        delta = self.reader.advance()
        if delta.changed:
            self.advances += 1
        for item in self.reader.load(delta.records):
            if item.ok:
                self.loaded[item.record.episode_id] += 1
                self.failed.pop(item.record.episode_id, None)
            else:
                self.failed[item.record.episode_id] = f"{item.status.value}: {item.error}"


def _read_status(path: Path) -> dict:
    for _ in range(50):
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.02)
    raise AssertionError(f"no producer status at {path}")


def _wait_log(proc, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in proc.log_tail(200_000):
            return
        if not proc.alive():
            break
        time.sleep(0.05)
    raise AssertionError(f"{proc.name} never logged {text!r}:\n{proc.log_tail()}")


@pytest.mark.slow
def test_kill9_chaos_every_episode_committed_exactly_once(tmp_path):
    from lwd_learner.coordinator import CoordinatorConfig, SqliteSnapshotReader
    from lwd_learner.coordinator.runner import write_config
    from lwd_learner.localstack import ManagedProcess, MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3
    from lwd_learner.replay_reader import ReaderConfig, SnapshotReplayReader
    from lwd_protocol.store import EPISODES_BUCKET, POLICIES_BUCKET
    from lwd_protocol.transport import MqttEndpoint, S3Endpoint

    t_start = time.monotonic()
    seed = int(os.environ.get("LWD_CHAOS_SEED", SEED))
    rng = random.Random(seed)
    broker = MosquittoBroker(
        tmp_path / "mosquitto",
        [MqttIdentity.generate("coordinator", "coordinator"), *(MqttIdentity.generate(r, "robot") for r in ROBOTS)],
    )
    store = SeaweedS3(
        tmp_path / "seaweedfs",
        [
            S3Identity.generate("admin", ("Admin", "Read", "List", "Write")),
            S3Identity.generate("coordinator", ("Read", "List")),
            *(S3Identity.generate(r, (f"Write:{EPISODES_BUCKET}", f"Read:{POLICIES_BUCKET}")) for r in ROBOTS),
        ],
    )

    def mqtt(user: str, client_id: str, persistent: bool = False) -> MqttEndpoint:
        ident = broker.identity(user)
        return MqttEndpoint(
            broker.host,
            broker.port,
            ident.username,
            ident.password,
            client_id=client_id,
            clean_session=not persistent,
            reconnect_min_s=1,
            reconnect_max_s=2,
        )

    def s3(name: str) -> S3Endpoint:
        ident = store.identity(name)
        return S3Endpoint(store.endpoint, ident.access_key, ident.secret_key, region=store.region, connect_timeout_s=1)

    py = sys.executable
    db = tmp_path / "coordinator" / "snapshots.sqlite"
    procs: dict[str, ManagedProcess] = {}
    learner: _Learner | None = None
    timeline: list[tuple[float, str, str]] = []
    samples: list[dict[str, dict]] = []
    try:
        broker.start()
        store.start()
        coord_cfg = CoordinatorConfig(
            mqtt=mqtt("coordinator", "lwd-coordinator-chaos", persistent=True),
            s3=s3("coordinator"),
            db_path=db,
            batch_size=50,
            batch_interval_s=0.3,
            retry_initial_s=0.2,
            retry_max_s=1.0,
            sweep_interval_s=1.0,
            sweep_grace_s=3.0,
        )
        coord_json = write_config(tmp_path / "coordinator" / "coordinator.json", coord_cfg)
        procs["coordinator"] = ManagedProcess(
            "coordinator",
            [py, "-m", "lwd_learner.coordinator", "--config", str(coord_json)],
            tmp_path / "coordinator" / "coordinator.log",
        ).start()
        _wait_log(procs["coordinator"], "subscribed to episode announcements", 60)

        status_paths = {}
        for i, robot in enumerate(ROBOTS):
            rdir = tmp_path / robot
            rdir.mkdir()
            common = {"robot_id": robot, "spool": str(rdir / "spool")}
            uplink_cfg = rdir / "uplink.json"
            uplink_cfg.write_text(
                json.dumps(
                    {
                        **common,
                        "mqtt": vars(mqtt(robot, f"uplink-{robot}")),
                        "s3": {k: v for k, v in vars(s3(robot)).items() if k != "tls"},
                    }
                )
            )
            uplink_cfg.chmod(0o600)
            status_paths[robot] = rdir / "status.json"
            producer_cfg = rdir / "producer.json"
            producer_cfg.write_text(
                json.dumps(
                    {
                        **common,
                        "status": str(status_paths[robot]),
                        "produced": str(rdir / "produced.txt"),
                        "episode_period_s": EPISODE_PERIOD_S,
                        "seed": seed + i,
                    }
                )
            )
            script = str(Path(__file__).resolve())
            procs[f"uplink:{robot}"] = ManagedProcess(
                f"uplink-{robot}", [py, script, "uplink", str(uplink_cfg)], rdir / "uplink.log", cwd=HERE
            ).start()
            procs[f"producer:{robot}"] = ManagedProcess(
                f"producer-{robot}", [py, script, "producer", str(producer_cfg)], rdir / "producer.log", cwd=HERE
            ).start()
        learner = _Learner(db, s3("admin"))
        learner.start()
        assert wait_until(lambda: all(p.exists() for p in status_paths.values()), 30), "producers did not start"

        def sample(label: str) -> None:
            samples.append({"label": label, **{r: _read_status(p) for r, p in status_paths.items()}})

        def mark(event: str, target: str) -> None:
            timeline.append((round(time.monotonic() - t_start, 2), event, target))
            sample(f"{event} {target.split(':')[0]}")  # label by kind: "kill -9 uplink", "restart store"

        # ---- chaos: each kind EVENTS_PER_KIND times, shuffled, at random moments, random downtimes
        kinds = list(KINDS) * EVENTS_PER_KIND
        rng.shuffle(kinds)
        chaos_started = time.monotonic()
        for kind in kinds:
            time.sleep(rng.uniform(1.0, 3.0))
            target = f"uplink:{rng.choice(ROBOTS)}" if kind == "uplink" else kind
            if kind == "broker":
                broker.kill()
            elif kind == "store":
                store.kill()
            else:
                procs[target].kill()
            mark("kill -9", target)
            time.sleep(rng.uniform(0.5, 2.5))
            if kind == "broker":
                broker.restart()
            elif kind == "store":
                store.restart()
            else:
                procs[target].start()
            mark("restart", target)
        chaos_s = time.monotonic() - chaos_started
        time.sleep(1.0)
        sample("end of chaos")

        # ---- producers stop; everything they made must arrive exactly once
        for robot in ROBOTS:
            procs[f"producer:{robot}"].stop()
        final = {r: _read_status(p) for r, p in status_paths.items()}
        produced: dict[str, str] = {}
        for robot in ROBOTS:
            for eid in (tmp_path / robot / "produced.txt").read_text().split():
                produced[eid] = robot
        assert all(final[r].get("final") for r in ROBOTS), final
        assert sum(f["episodes"] for f in final.values()) == len(produced)

        reader_db = SqliteSnapshotReader(db)

        def committed() -> set[str]:
            v = reader_db.current_version()
            return {e.episode_id for e in reader_db.get_snapshot(v)} if v else set()

        drain_started = time.monotonic()
        arrived = wait_until(lambda: set(produced) <= committed(), 90, every_s=0.25)
        missing = set(produced) - committed()
        assert arrived, f"{len(missing)} of {len(produced)} produced episodes never committed: {sorted(missing)[:5]}"
        drain_s = time.monotonic() - drain_started

        def leftovers() -> dict[str, list[str]]:
            return {r: sorted(p.name for p in (tmp_path / r / "spool").glob("*.mcap")) for r in ROBOTS}

        spools_empty = wait_until(lambda: not any(leftovers().values()), 30, every_s=0.25)
        assert spools_empty, (leftovers(), {r: procs[f"uplink:{r}"].log_tail(3000) for r in ROBOTS})

        # ---- exactly once: consecutive deltas partition the data; bookkeeping adds up
        newest = reader_db.current_version()
        seen: Counter[str] = Counter()
        total = 0
        for info in reader_db.list_snapshots():
            delta = reader_db.get_delta(info.version - 1, info.version)
            assert info.parent == info.version - 1 and info.added == len(delta) > 0, info
            total += len(delta)
            assert info.num_episodes == total, info
            seen.update(e.episode_id for e in delta)
        assert [s.version for s in reader_db.list_snapshots()] == list(range(1, newest + 1))
        assert all(n == 1 for n in seen.values()), [e for e, n in seen.items() if n > 1]
        assert set(seen) == set(produced), f"phantom episodes: {sorted(set(seen) - set(produced))[:5]}"
        snapshot = reader_db.get_snapshot(newest)
        assert all(e.robot_id == produced[e.episode_id] for e in snapshot)
        assert reader_db.quarantined() == [], [q.reason for q in reader_db.quarantined()]

        # ---- no committed version references a missing or corrupt object
        with SnapshotReplayReader.open(db, s3("admin"), ReaderConfig(retries=3, load_images=False)) as check:
            results = list(check.load(check.bind(newest)))
        bad = [(x.record.episode_id, x.status.value, x.error) for x in results if not x.ok]
        assert not bad, bad
        assert all(x.episode.num_steps == x.record.num_steps for x in results)

        # ---- the learner followed along and, after one last advance, has everything exactly once
        learner.stop.set()
        learner.join(60)
        assert learner.error is None, repr(learner.error)
        learner.step()
        assert learner.failed == {}, learner.failed
        assert set(learner.loaded) == set(produced) and max(learner.loaded.values()) == 1

        # ---- the robots' loops never stopped: ticks (and episodes) grew between every two samples
        for robot in ROBOTS:
            ticks = [s[robot]["ticks"] for s in samples]
            assert all(b > a for a, b in itertools.pairwise(ticks)), f"{robot} ticks {ticks}"
            eps = [s[robot]["episodes"] for s in samples]
            assert all(b >= a for a, b in itertools.pairwise(eps)), f"{robot} episodes {eps}"
            for kind in KINDS:  # episodes were recorded while each kind of process was down
                outages = [(a, b) for a, b in itertools.pairwise(samples) if a["label"] == f"kill -9 {kind}"]
                assert sum(b[robot]["episodes"] - a[robot]["episodes"] for a, b in outages) > 0, (robot, kind, eps)

        coord_log = procs["coordinator"].log_tail(10_000_000)
        dup_count = sum(s.duplicates for s in reader_db.robot_stats().values())
        report = {
            "seed": seed,
            "runtime_s": round(time.monotonic() - t_start, 1),
            "chaos_s": round(chaos_s, 1),
            "drain_s": round(drain_s, 1),
            "kills": Counter(t for _, e, t in timeline if e == "kill -9"),
            "produced": len(produced),
            "per_robot": {r: final[r]["episodes"] for r in ROBOTS},
            "snapshot_versions": newest,
            "duplicates_deduped": dup_count,
            "recorded_by_sweep_first": coord_log.count("sweep recovered never-announced episode"),
            "learner_advances": learner.advances,
            "producer_max_tick_gap_s": {r: round(final[r]["max_gap_s"], 3) for r in ROBOTS},
            "timeline": timeline,
        }
        reader_db.close()
        print("\nchaos report:", json.dumps(report, indent=1, default=dict))
        (tmp_path / "chaos_report.json").write_text(json.dumps(report, indent=1, default=dict))
    finally:
        if learner is not None:
            learner.stop.set()
            learner.join(30)
            if learner.reader is not None:
                learner.reader.close()
        for proc in procs.values():
            proc.stop()
        store.stop()
        broker.stop()


if __name__ == "__main__":
    role, config_path = sys.argv[1], Path(sys.argv[2])
    config = json.loads(config_path.read_text())
    {"producer": run_producer, "uplink": run_uplink}[role](config)
