"""`make demo`: run the largest real slice of the LWD loop that exists, on 127.0.0.1 only.

Today's slice (it grows as the flywheel lands): a real mosquitto broker and a real S3 store
start with per-robot credentials, and the Coordinator starts with a persistent MQTT session and
a SQLite snapshot store. Each simulated robot records episodes in the protocol's MCAP format
into its spool (scripted-expert rollouts of the MuJoCo fleet when lwd_sim is installed, else a
joint-space trajectory generator); its EpisodeUplink uploads each one under the robot's own key
prefix with its sha256, announces it on the robot's MQTT topic (QoS 1) and deletes the spool
file once the broker acknowledged. The Coordinator verifies every episode (object, size,
sha256, schema) and commits monotonically increasing snapshot versions. The run prints what it
did and the measured episode->snapshot latencies, and stops every process it started.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lwd_fleet.uplink import EpisodeUplink, UplinkConfig
from lwd_learner.coordinator import Coordinator, CoordinatorConfig
from lwd_learner.localstack import MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3
from lwd_protocol.episode import (
    ActionSource,
    EpisodeEnd,
    EpisodeSource,
    EpisodeStart,
    Outcome,
    episode_filename,
    new_episode_id,
)
from lwd_protocol.episode_io import EpisodeWriter
from lwd_protocol.robot_spec import ACTION_DIM, CONTROL_RATE_HZ
from lwd_protocol.tasks import TASK_NAMES
from lwd_protocol.transport import MqttEndpoint, S3Endpoint


@dataclass
class DemoConfig:
    robots: int = 4
    episodes_per_robot: int = 2
    steps_per_episode: int = 90
    image_size: int = 64
    sim_images: bool = True  # render the three cameras into sim episodes
    sim_max_steps: int | None = None  # cap sim episodes (None: each task's own time limit)
    workdir: Path | None = None


def _joint_space_episode(path: Path, start: EpisodeStart, steps: int, image_size: int, rng) -> Path:
    """Record a smooth joint-space trajectory with camera frames (used when lwd_sim is absent)."""
    writer = EpisodeWriter(path, start)
    goal = rng.uniform(-0.5, 0.5, ACTION_DIM).astype(np.float32)
    q = np.zeros(ACTION_DIM, np.float32)
    t0 = time.time_ns()
    for t in range(steps):
        stamp = t0 + int(t * 1e9 / CONTROL_RATE_HZ)
        target = q + 0.1 * (goal - q)
        for cam in start.cameras:
            frame = np.full((image_size, image_size, 3), (t * 3) % 255, np.uint8)
            frame[:, : image_size // 2, 0] = int(127 + 100 * np.tanh(q[0]))
            writer.write_image(cam, frame, t, stamp)
        writer.write_joint_state(q, t, stamp)
        writer.write_action(target, t, stamp, source=ActionSource.POLICY, policy_version=0)
        q = target
    success = bool(rng.random() < 0.5)
    return writer.close(EpisodeEnd(outcome=Outcome.SUCCESS if success else Outcome.FAILURE, num_steps=steps))


def _record_episodes(spool: Path, robot_id: str, cfg: DemoConfig, rng: np.random.Generator, index: int) -> list[str]:
    """Expert rollouts of the MuJoCo fleet when lwd_sim is installed, else joint-space trajectories."""
    try:
        from lwd_sim.env import EnvConfig, LwdSimEnv
        from lwd_sim.experts import ScriptedExpert
        from lwd_sim.generate import record_episode
        from lwd_sim.tasks import IMPLEMENTED_TASKS
    except ImportError:
        IMPLEMENTED_TASKS = ()
    ids = []
    for k in range(cfg.episodes_per_robot):
        if IMPLEMENTED_TASKS:
            task = IMPLEMENTED_TASKS[(index + k) % len(IMPLEMENTED_TASKS)]
            env = LwdSimEnv(task, seed=0, config=EnvConfig(image_size=cfg.image_size, max_steps=cfg.sim_max_steps))
            try:
                path, _ = record_episode(
                    env,
                    ScriptedExpert(env),
                    int(rng.integers(1 << 30)),
                    spool,
                    EpisodeSource.ONLINE,
                    robot_id,
                    images=cfg.sim_images,
                )
            finally:
                env.close()
            ids.append(path.stem)
            continue
        task = TASK_NAMES[(index + k) % len(TASK_NAMES)]
        eid = new_episode_id(robot_id)
        start = EpisodeStart(
            episode_id=eid,
            robot_id=robot_id,
            task=task,
            instruction=f"do the {task} task",
            source=EpisodeSource.ONLINE,
            started_at_ns=time.time_ns(),
        )
        _joint_space_episode(spool / episode_filename(eid), start, cfg.steps_per_episode, cfg.image_size, rng)
        ids.append(eid)
    return ids


def run(cfg: DemoConfig) -> dict:
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="lwd-demo-"))
    robot_ids = [f"robot_{i + 1:02d}" for i in range(cfg.robots)]
    broker = MosquittoBroker(
        workdir / "mosquitto",
        [MqttIdentity.generate("coordinator", "coordinator")] + [MqttIdentity.generate(r, "robot") for r in robot_ids],
    )
    store = SeaweedS3(
        workdir / "seaweedfs",
        [S3Identity.admin(), S3Identity.coordinator()] + [S3Identity.robot(r) for r in robot_ids],
    )
    print(f"[demo] workdir {workdir}")
    t_start = time.monotonic()
    started: list = []
    try:
        broker.start()
        started.append(broker)
        store.start()
        started.append(store)
        print(f"[demo] mosquitto on 127.0.0.1:{broker.port}, S3 (SeaweedFS) on {store.endpoint}")
        coordinator = Coordinator(
            CoordinatorConfig(
                mqtt=_mqtt_endpoint(broker, "coordinator", client_id="lwd-coordinator", persistent=True),
                s3=_s3_endpoint(store, "coordinator"),
                db_path=workdir / "snapshots.sqlite",
                batch_size=cfg.robots,
                batch_interval_s=1.0,
            )
        ).start()
        started.append(coordinator)
        uplinks = {}
        for robot_id in robot_ids:
            uplinks[robot_id] = EpisodeUplink(
                UplinkConfig(
                    robot_id=robot_id,
                    spool_dir=workdir / "spool" / robot_id,
                    mqtt=_mqtt_endpoint(broker, robot_id, client_id=f"uplink-{robot_id}"),
                    s3=_s3_endpoint(store, robot_id),
                    poll_interval_s=0.1,
                )
            ).start()
            started.append(uplinks[robot_id])
        print(f"[demo] coordinator (SQLite snapshots) and {len(uplinks)} robot uplinks running")
        rng = np.random.default_rng(0)
        produced = []
        for index, robot_id in enumerate(robot_ids):
            produced += _record_episodes(workdir / "spool" / robot_id, robot_id, cfg, rng, index)
        print(f"[demo] robots recorded {len(produced)} episodes into their spools")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            version = coordinator.current_version()
            if version and len(coordinator.get_snapshot(version)) >= len(produced):
                break
            time.sleep(0.1)
        version = coordinator.current_version()
        snapshot = coordinator.get_snapshot(version) if version else []
        missing = set(produced) - {r.episode_id for r in snapshot}
        if missing:
            raise RuntimeError(f"{len(missing)} episodes never reached a snapshot: {sorted(missing)[:3]}")
        latency_ms = [(r.verified_at_ns - r.committed_at_ns) / 1e6 for r in snapshot]
        leftovers = [p for u in uplinks.values() for p in u.config.spool_dir.glob("*.mcap")]
        summary = {
            "robots": robot_ids,
            "snapshot_version": version,
            "episodes": len(snapshot),
            "quarantined": len(coordinator.quarantined()),
            "spool_leftovers": len(leftovers),
            "latency_ms": latency_ms,
        }
        print(
            f"[demo] snapshot v{version}: {len(snapshot)}/{len(produced)} episodes from {len(robot_ids)} robots, "
            f"{summary['quarantined']} quarantined, {len(leftovers)} files left in robot spools"
        )
        print(
            f"[demo] episode committed on robot -> verified by coordinator: p50 {statistics.median(latency_ms):.0f} ms,"
            f" max {max(latency_ms):.0f} ms"
        )
        for robot_id, stats in sorted(coordinator.robot_stats().items()):
            print(f"        {robot_id}: {stats}")
    finally:
        for part in reversed(started):
            if isinstance(part, EpisodeUplink):
                part.close()
            else:
                part.stop()
    print(f"[demo] done in {time.monotonic() - t_start:.1f} s; all services stopped")
    return summary


def _mqtt_endpoint(broker: MosquittoBroker, user: str, client_id: str, persistent: bool = False) -> MqttEndpoint:
    ident = broker.identity(user)
    return MqttEndpoint(
        broker.host, broker.port, ident.username, ident.password, client_id=client_id, clean_session=not persistent
    )


def _s3_endpoint(store: SeaweedS3, name: str) -> S3Endpoint:
    ident = store.identity(name)
    return S3Endpoint(store.endpoint, ident.access_key, ident.secret_key, region=store.region)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--robots", type=int, default=4)
    parser.add_argument("--episodes-per-robot", type=int, default=2)
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    run(
        DemoConfig(
            robots=args.robots,
            episodes_per_robot=args.episodes_per_robot,
            steps_per_episode=args.steps,
            workdir=args.workdir,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
