"""`make demo`: run the largest real slice of the LWD loop that exists, on 127.0.0.1 only.

Today's slice (grows as the flywheel lands): a real mosquitto broker and a real S3 store start
with per-robot credentials; each simulated robot records episodes in the protocol's MCAP
format (scripted-expert rollouts from lwd_sim when it is installed, else a joint-space
trajectory generator), uploads each one under its own key prefix with its sha256, and only then
announces it on its MQTT topic (QoS 1). A cloud-side consumer with its own identity receives the
announcements, downloads, verifies the hash and decodes every episode. The run prints what it
did and the measured episode->cloud latencies, and stops every process it started.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import queue
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lwd_learner.localstack import MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3
from lwd_protocol.episode import EpisodeEnd, EpisodeSource, EpisodeStart, Outcome, episode_filename, new_episode_id
from lwd_protocol.episode_io import EpisodeWriter, read_episode
from lwd_protocol.names import MqttTopics
from lwd_protocol.robot_spec import ACTION_DIM
from lwd_protocol.store import EPISODES_BUCKET, POLICIES_BUCKET, episode_key
from lwd_protocol.tasks import TASK_NAMES


@dataclass
class DemoConfig:
    robots: int = 4
    episodes_per_robot: int = 2
    steps_per_episode: int = 90
    image_size: int = 64
    workdir: Path | None = None


def _joint_space_episode(path: Path, start: EpisodeStart, steps: int, image_size: int, rng) -> Path:
    """Record a smooth joint-space trajectory with camera frames (used when lwd_sim is absent)."""
    writer = EpisodeWriter(path, start)
    goal = rng.uniform(-0.5, 0.5, ACTION_DIM).astype(np.float32)
    q = np.zeros(ACTION_DIM, np.float32)
    t0 = time.time_ns()
    for t in range(steps):
        stamp = t0 + int(t * 1e9 / 30)
        target = q + 0.1 * (goal - q)
        for cam in start.cameras:
            frame = np.full((image_size, image_size, 3), (t * 3) % 255, np.uint8)
            frame[:, : image_size // 2, 0] = int(127 + 100 * np.tanh(q[0]))
            writer.write_image(cam, frame, t, stamp)
        writer.write_joint_state(q, t, stamp)
        writer.write_action(target, t, stamp, source=0, policy_version=0)
        q = target
    success = bool(rng.random() < 0.5)
    return writer.close(EpisodeEnd(outcome=Outcome.SUCCESS if success else Outcome.FAILURE, num_steps=steps))


def _connect(broker: MosquittoBroker, username: str, client_id: str) -> mqtt.Client:
    ident = broker.identity(username)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.username_pw_set(ident.username, ident.password)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if rc.value == 0 else None
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"MQTT login as {username} failed")
    return client


def run(cfg: DemoConfig) -> dict:
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="lwd-demo-"))
    robot_ids = [f"robot_{i + 1:02d}" for i in range(cfg.robots)]
    broker = MosquittoBroker(
        workdir / "mosquitto",
        [MqttIdentity.generate("coordinator", "coordinator")] + [MqttIdentity.generate(r, "robot") for r in robot_ids],
    )
    store = SeaweedS3(
        workdir / "seaweedfs",
        [S3Identity.generate("coordinator", ("Admin", "Read", "List", "Write"))]
        + [S3Identity.generate(r, (f"Write:{EPISODES_BUCKET}", f"Read:{POLICIES_BUCKET}")) for r in robot_ids],
    )
    print(f"[demo] workdir {workdir}")
    t_start = time.monotonic()
    broker.start()
    store.start()
    print(f"[demo] mosquitto on 127.0.0.1:{broker.port}, S3 (SeaweedFS) on {store.endpoint}")
    announcements: queue.Queue = queue.Queue()
    cloud = _connect(broker, "coordinator", "lwd-demo-cloud")
    subscribed = threading.Event()
    cloud.on_subscribe = lambda *a: subscribed.set()
    cloud.on_message = lambda c, u, msg: announcements.put((msg.topic, msg.payload, time.time_ns()))
    cloud.subscribe(MqttTopics.all_episodes(), qos=1)
    subscribed.wait(10)
    summary: dict = {"robots": robot_ids, "episodes": [], "latency_ms": []}
    try:
        rng = np.random.default_rng(0)
        expected = 0
        for robot_id in robot_ids:
            spool = workdir / "spool" / robot_id
            spool.mkdir(parents=True)
            s3 = store.client(robot_id)
            client = _connect(broker, robot_id, f"lwd-demo-{robot_id}")
            for k in range(cfg.episodes_per_robot):
                task = TASK_NAMES[(robot_ids.index(robot_id) + k) % len(TASK_NAMES)]
                eid = new_episode_id(robot_id)
                start = EpisodeStart(
                    episode_id=eid,
                    robot_id=robot_id,
                    task=task,
                    instruction=f"do the {task.replace('_', ' ')} task",
                    source=EpisodeSource.ONLINE,
                    started_at_ns=time.time_ns(),
                )
                path = _joint_space_episode(
                    spool / episode_filename(eid), start, cfg.steps_per_episode, cfg.image_size, rng
                )
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                committed_ns = time.time_ns()
                s3.put_object(
                    EPISODES_BUCKET,
                    episode_key(robot_id, eid),
                    io.BytesIO(data),
                    len(data),
                    metadata={"sha256": digest},
                )
                announcement = {
                    "episode_id": eid,
                    "robot_id": robot_id,
                    "key": episode_key(robot_id, eid),
                    "sha256": digest,
                    "size": len(data),
                    "committed_ns": committed_ns,
                    "task": task,
                }
                client.publish(MqttTopics.episodes(robot_id), json.dumps(announcement), qos=1).wait_for_publish(10)
                path.unlink()  # broker acknowledged: the spool copy may go
                expected += 1
            client.disconnect()
            client.loop_stop()
        admin_s3 = store.client("coordinator")
        for _ in range(expected):
            topic, payload, _received_ns = announcements.get(timeout=30)
            ann = json.loads(payload)
            if MqttTopics.robot_id_from_topic(topic) != ann["robot_id"]:
                raise RuntimeError(f"announcement for {ann['robot_id']} arrived on {topic}")
            resp = admin_s3.get_object(EPISODES_BUCKET, ann["key"])
            try:
                blob = resp.read()
            finally:
                resp.close()
                resp.release_conn()
            if hashlib.sha256(blob).hexdigest() != ann["sha256"]:
                raise RuntimeError(f"sha256 mismatch for {ann['key']}")
            episode = read_episode(blob)
            latency_ms = (time.time_ns() - ann["committed_ns"]) / 1e6
            summary["latency_ms"].append(latency_ms)
            summary["episodes"].append(
                {
                    "episode_id": ann["episode_id"],
                    "task": episode.start.task,
                    "steps": episode.num_steps,
                    "outcome": episode.end.outcome.value,
                    "bytes": len(blob),
                    "cameras": sorted(episode.images),
                }
            )
    finally:
        cloud.disconnect()
        cloud.loop_stop()
        broker.stop()
        store.stop()
    lat = summary["latency_ms"]
    print(
        f"[demo] {len(summary['episodes'])} episodes from {len(robot_ids)} robots recorded -> uploaded -> announced "
        f"-> received, sha256-verified and decoded by the cloud side"
    )
    print(f"[demo] episode committed -> verified in cloud: p50 {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms")
    for ep in summary["episodes"]:
        print(
            f"        {ep['episode_id']}  {ep['task']:<22} {ep['steps']} steps  {ep['outcome']:<8} "
            f"{ep['bytes'] / 1e6:.1f} MB  cameras={','.join(ep['cameras'])}"
        )
    print(f"[demo] done in {time.monotonic() - t_start:.1f} s; all services stopped")
    return summary


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
