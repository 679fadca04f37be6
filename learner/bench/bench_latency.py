"""Data-plane latency: episode committed on a robot -> in a snapshot the learner's replay reader sees.

Usage (from the repo root):

    .venv/bin/python learner/bench/bench_latency.py [--robots 16] [--episode-seconds 60]
        [--episodes-per-robot 2] [--image-size 128] [--frames sim|noise] [--decode-images]
        [--no-policy] [--quick] [--out learner/bench/results/latency.json]

Default: 16 robots x 2 episodes of 60 s, about 3.5 min (plus a one-off ~1-2 min to render the
frames and export the policy artifacts into var/bench-cache). `--quick`: 4 robots x 2 episodes
of 10 s, about a minute, written to latency_quick.json.

What runs, all on 127.0.0.1 and all real: mosquitto, SeaweedFS (S3), the Coordinator as its own
process (`python -m lwd_learner.coordinator`), N robot processes and a learner. Each robot
process is what a robot runs besides ROS: a recorder loop writing a three-camera episode in real
time at 30 Hz into its spool with the recorder's default settings (lwd_fleet.recording's
RecorderConfig: MCAP zstd chunks of its chunk size, its image compression, default camera size of
the sim driver), committing it with the atomic rename, then the next one; and the EpisodeUplink
library with its default settings uploading and announcing. Robots start staggered over one
episode length, so commits arrive spread out like a fleet's. Frames are real MuJoCo renders of
the lwd_sim scene (`--frames sim`, rendered once and cached under var/bench-cache, looped over
the episode; MCAP compresses each chunk on its own, so the file size is that of distinct frames),
or incompressible noise (`--frames noise`, the worst case of a raw real camera).

The learner follows the Coordinator's retained snapshot topic (SnapshotWatcher) and calls the
replay reader's advance() on each new version, in one thread; a second thread loads (downloads,
sha256-checks and decodes; camera frames only with --decode-images, since the CPU learner trains
on low-dim state) the new episodes. Measured per episode, on the one machine clock: robot commit
(rename done) -> announcement delivered by the broker (a read-only monitor client) ->
Coordinator verified -> snapshot committed -> visible to the learner (advance() returned it) ->
loaded. The JSON keeps P50/P99/max of each and every episode's numbers, with the load average:
on a shared machine the numbers move with what else runs.

Policy publish -> active runs at the same time, as in a fleet: the learner publishes two policy
versions (real artifacts of the default learner network exported by lwd_learner.artifact, cached
under var/bench-cache; signed at publication) with lwd_learner.publish during the episodes. Every
robot process runs lwd_fleet.policy_sync (download, verify, build + validate the ONNX Runtime CPU
engine) and a stand-in for the controller's swap logic: PolicyLoader prepares the pending
version in the background and it is swapped in at the robot's next episode boundary (a robot that
finished its episodes idles at a boundary). Measured from the publish() call (artifact upload
included): received by the robot -> ready (engine built and validated) -> loaded by the
controller -> active. `--no-policy` skips this half.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lwd_learner.provenance import git_label
from lwd_protocol.version import MANIFEST_FORMAT_VERSION

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "var" / "bench-cache"
POOL_STEPS = 300  # frames rendered once per camera, looped over an episode
CONTROL_HZ = 30.0


@dataclass(frozen=True)
class BenchConfig:
    robots: int = 16
    episode_seconds: float = 60.0
    episodes_per_robot: int = 2
    image_size: int = 0  # 0: the sim driver's default camera size
    frames: str = "sim"  # sim | noise
    commit_interval_s: float = 5.0  # Coordinator batch_interval_s (its default; idle commits come first)
    decode_images: bool = False  # the learner decodes the camera frames too (CPU learners train on state)
    policy: bool = True  # measure policy publish -> active alongside
    seed: int = 0
    timeout_s: float = 600.0
    workdir: Path | None = None
    cache_dir: Path | None = None  # rendered frames and exported artifacts (default var/bench-cache)

    def __post_init__(self) -> None:
        if self.robots < 1 or self.episodes_per_robot < 1 or self.episode_seconds <= 0:
            raise ValueError("--robots, --episodes-per-robot and --episode-seconds must be positive")
        if self.frames not in ("sim", "noise"):
            raise ValueError(f"--frames must be sim or noise, got {self.frames!r}")
        if self.image_size < 0:
            raise ValueError(f"--image-size must be >= 0, got {self.image_size}")


def recorder_defaults() -> dict[str, Any]:
    """The robot recorder's own defaults, read from its config class so the bench follows it."""
    from lwd_fleet.recording.core import RecorderConfig

    cfg = RecorderConfig(robot_id="bench", spool_dir=Path("."))
    return {
        "chunk_bytes": cfg.chunk_bytes,
        "image_compression": cfg.image_compression,
        "jpeg_quality": cfg.jpeg_quality,
        "image_downscale": cfg.image_downscale,
    }


def sim_camera_size() -> int:
    """The sim driver's default camera size (its ROS parameter default, also in robot.yaml)."""
    from lwd_sim.env import EnvConfig

    return EnvConfig().image_size


# --------------------------------------------------------------------------- frames
def frame_pool(kind: str, size: int, seed: int, cache: Path = CACHE) -> dict[str, Path]:
    """camera -> .npy file of (POOL_STEPS, size, size, 3) uint8 frames (memory-mapped by every robot)."""
    from lwd_protocol.robot_spec import CAMERA_NAMES

    folder = cache / f"{kind}-frames-{size}px-{POOL_STEPS}"
    paths = {c: folder / f"{c}.npy" for c in CAMERA_NAMES}
    if all(p.is_file() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "noise":
        rng = np.random.default_rng(seed)
        frames = {c: rng.integers(0, 256, (POOL_STEPS, size, size, 3), np.uint8) for c in CAMERA_NAMES}
    else:
        frames = _render_sim_frames(size, seed)
    for cam, arr in frames.items():
        tmp = paths[cam].with_name(paths[cam].stem + ".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, paths[cam])
    return paths


def _render_sim_frames(size: int, seed: int) -> dict[str, np.ndarray]:
    """Scripted-expert rollouts of the lwd_sim tasks, rendered by the three cameras."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from lwd_sim.env import EnvConfig, LwdSimEnv
    from lwd_sim.experts import ExpertConfig, ScriptedExpert
    from lwd_sim.tasks import IMPLEMENTED_TASKS

    print(f"[bench] rendering {POOL_STEPS} sim frames per camera at {size}px (cached for later runs)", flush=True)
    out: dict[str, list[np.ndarray]] = {}
    episode = 0
    while len(next(iter(out.values()), [])) < POOL_STEPS:
        env = LwdSimEnv(IMPLEMENTED_TASKS[episode % len(IMPLEMENTED_TASKS)], seed, EnvConfig(image_size=size))
        try:
            env.reset(seed + episode)
            expert = ScriptedExpert(env, ExpertConfig(seed=seed + episode))
            for _ in range(POOL_STEPS):
                for cam, img in env.render().items():
                    out.setdefault(cam, []).append(img)
                _, _, terminated, truncated, _ = env.step(expert.act())
                if terminated or truncated or len(out[cam]) >= POOL_STEPS:
                    break
        finally:
            env.close()
        episode += 1
    return {cam: np.stack(v[:POOL_STEPS]) for cam, v in out.items()}


# --------------------------------------------------------------------------- policy artifacts
POLICY_VERSIONS = (1, 2)


def policy_artifacts() -> tuple[dict[int, Path], bool]:
    """Unsigned artifact folders of the default learner network for POLICY_VERSIONS; (folders, from cache)."""
    folder = CACHE / f"policy-artifacts-format{MANIFEST_FORMAT_VERSION}"  # older caches would be refused
    paths = {v: folder / f"v{v:06d}" for v in POLICY_VERSIONS}
    if all((p / "manifest.json").is_file() for p in paths.values()):
        return paths, True
    import jax
    import jax.numpy as jnp

    from lwd_learner.agent import LWDAgent
    from lwd_learner.artifact import build_artifact
    from lwd_learner.config import LearnerConfig
    from lwd_protocol.manifest import Normalization, ObservationSpec
    from lwd_protocol.robot_spec import JOINT_NAMES
    from lwd_protocol.tasks import TASK_NAMES

    print("[bench] exporting policy artifacts of the default learner network (cached for later runs)", flush=True)
    config = LearnerConfig()
    net = config.network
    agent = LWDAgent(config)
    zeros = (jnp.zeros((1, net.obs_dim)), jnp.zeros((1, net.horizon, net.action_dim)), jnp.zeros((1,)))
    params = jax.jit(agent.velocity.init)(jax.random.PRNGKey(0), *zeros)
    state_dim = net.obs_dim - len(TASK_NAMES)
    observation = ObservationSpec(state_source="sim_state", state_dim=state_dim, tasks=list(TASK_NAMES))
    a = len(JOINT_NAMES)
    norm = Normalization([0.0] * state_dim, [1.0] * state_dim, [0.0] * a, [1.0] * a)
    folder.mkdir(parents=True, exist_ok=True)
    for i, version in enumerate(POLICY_VERSIONS):
        if (paths[version] / "manifest.json").is_file():
            continue
        shutil.rmtree(paths[version], ignore_errors=True)
        scaled = jax.tree_util.tree_map(lambda x, k=i: x * (1.0 + 0.01 * k), params)
        build_artifact(
            paths[version],
            agent,
            scaled,
            normalization=norm,
            observation=observation,
            version=version,
            parent_version=version - 1,
            training_snapshot=version,
            notes="bench_latency",
        )
    return paths, False


class PolicySwapper(threading.Thread):
    """Stand-in for the controller's swap logic: load pending versions in the background, swap at boundaries."""

    def __init__(self, sync, cache_dir: Path):
        from lwd_fleet.inference.loader import LoaderConfig, PolicyLoader

        super().__init__(name="bench-swapper", daemon=True)
        self.sync, self.cache_dir = sync, cache_dir
        self.loader = PolicyLoader(LoaderConfig(preference="onnxruntime-cpu", backend_kwargs={"ort_threads": 1}))
        self.lock = threading.Lock()
        self.staged = None
        self.active = None
        self.requested: dict[int, float] = {}
        self.loaded: dict[int, float] = {}
        self.swapped: dict[int, float] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()

    @property
    def active_version(self) -> int:
        return self.active.version if self.active is not None else 0

    def run(self) -> None:
        from lwd_fleet.inference.artifact import artifact_dir
        from lwd_fleet.inference.loader import LoadedPolicy

        while not self.stop.wait(0.05):
            pending = self.sync.status().pending_version
            if pending and pending not in self.requested:
                self.requested[pending] = time.monotonic()
                self.loader.request(artifact_dir(self.cache_dir, pending), pending)
            result = self.loader.poll()
            if isinstance(result, LoadedPolicy):
                self.loaded[result.version] = time.monotonic()
                with self.lock:
                    if self.staged is not None:
                        self.staged.backend.close()
                    self.staged = result
            elif result is not None:
                self.errors.append(f"v{result.version}: {result.error}")

    def boundary(self) -> None:
        """An episode boundary: swap in the staged version if it is newer than the active one."""
        with self.lock:
            staged = self.staged
            if staged is None or staged.version <= self.active_version:
                return
            self.staged = None
            old, self.active = self.active, staged
            self.swapped[staged.version] = time.monotonic()
        if old is not None:
            old.backend.close()
        self.sync.note_active(staged.version, staged.backend.name, time.time_ns())

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        self.loader.close()
        for policy in (self.staged, self.active):
            if policy is not None:
                policy.backend.close()


# --------------------------------------------------------------------------- robot process
def robot_main(config_path: Path) -> int:
    """One simulated robot: a real-time recorder loop + the EpisodeUplink library (robot defaults)."""
    from lwd_fleet.uplink import EpisodeUplink, UplinkConfig
    from lwd_protocol.episode import ActionSource, EpisodeEnd, EpisodeStart, Outcome, episode_filename, new_episode_id
    from lwd_protocol.episode_io import EpisodeWriter
    from lwd_protocol.robot_spec import ACTION_DIM
    from lwd_protocol.tasks import TASK_NAMES
    from lwd_protocol.transport import MqttEndpoint, S3Endpoint

    cfg = json.loads(config_path.read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    robot_id, spool = cfg["robot_id"], Path(cfg["spool"])
    rec = cfg["recorder"]
    compression = None if rec["image_compression"] == "none" else rec["image_compression"]
    shrink = None
    if rec["image_downscale"] > 1:
        from lwd_fleet.imaging import downscale as shrink
    frames = {cam: np.load(path, mmap_mode="r") for cam, path in cfg["frames"].items()}
    uplink = EpisodeUplink(
        UplinkConfig(robot_id, spool, MqttEndpoint(**cfg["mqtt"]), S3Endpoint(**cfg["s3"]))
    ).start()  # the library's defaults: poll interval, backoff, PUBACK timeout
    sync = swapper = None
    if cfg.get("policy"):
        from lwd_fleet.policy_sync import PolicySync, PolicySyncConfig
        from lwd_protocol.signing import load_trusted_keys

        pol = cfg["policy"]
        sync = PolicySync(
            PolicySyncConfig(
                robot_id=robot_id,
                cache_dir=Path(pol["cache_dir"]),
                mqtt=MqttEndpoint(**{**cfg["mqtt"], "client_id": f"sync-{robot_id}"}),
                s3=S3Endpoint(**cfg["s3"]),
                trusted_keys=load_trusted_keys([pol["public_key"]]),
                backend="onnxruntime-cpu",
            )
        ).start()
        swapper = PolicySwapper(sync, Path(pol["cache_dir"]))
        swapper.start()
    Path(cfg["ready"]).write_text("ready")
    while not Path(cfg["go"]).exists():
        if stop.wait(0.05):
            return 1
    t0_ns = json.loads(Path(cfg["go"]).read_text())["t0_ns"]
    rng = np.random.default_rng(cfg["seed"])
    steps = round(cfg["episode_seconds"] * CONTROL_HZ)
    results = []
    for k in range(cfg["episodes"]):
        if swapper is not None:
            swapper.boundary()
        start_ns = t0_ns + int((cfg["offset_s"] + k * cfg["episode_seconds"]) * 1e9)
        eid = new_episode_id(robot_id, start_ns)
        task = TASK_NAMES[(cfg["index"] + k) % len(TASK_NAMES)]
        start = EpisodeStart(eid, robot_id, task, f"bench {task}", policy_version=1, started_at_ns=start_ns)
        writer = EpisodeWriter(spool / episode_filename(eid), start, chunk_bytes=rec["chunk_bytes"])
        q = np.zeros(ACTION_DIM, np.float32)
        goal = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
        cpu0 = time.process_time()
        for t in range(steps):
            stamp = start_ns + int(t * 1e9 / CONTROL_HZ)
            wait_s = (stamp - time.time_ns()) / 1e9
            if wait_s > 0 and stop.wait(wait_s):
                writer.abandon()
                uplink.close()
                return 1
            for cam, pool in frames.items():
                img = np.asarray(pool[(t + 37 * cfg["index"]) % len(pool)])
                if shrink is not None:
                    img = shrink(img, rec["image_downscale"])
                writer.write_image(cam, img, t, stamp, compression=compression, quality=rec["jpeg_quality"])
            target = q + 0.02 * (goal - q)
            writer.write_joint_state(q, t, stamp)
            writer.write_action(target, t, stamp, source=ActionSource.POLICY, policy_version=1)
            q = target
        path = writer.close(
            EpisodeEnd(
                outcome=Outcome.SUCCESS if rng.random() < 0.5 else Outcome.FAILURE,
                num_steps=steps,
                ended_at_ns=time.time_ns(),
                policy_versions=(1,),
            )
        )
        commit_ns = time.time_ns()  # the rename is done: the episode is committed on the robot
        results.append(
            {
                "episode_id": eid,
                "commit_ns": commit_ns,
                "size": path.stat().st_size if path.exists() else None,
                "record_cpu_s": round(time.process_time() - cpu0, 3),
                "late_s": round((commit_ns - (start_ns + int(steps * 1e9 / CONTROL_HZ))) / 1e9, 3),
            }
        )
    deadline = time.monotonic() + 300
    final_version = max(cfg["policy"]["versions"]) if swapper is not None else 0
    while time.monotonic() < deadline and not stop.is_set():
        if swapper is not None:
            swapper.boundary()  # done recording: the robot idles at an episode boundary
        if not uplink.spool.ready() and (swapper is None or swapper.active_version >= final_version):
            break
        time.sleep(0.05)
    uplink.close()
    policy: dict[str, Any] = {}
    if swapper is not None:
        swapper.close()
        sync.stop()
        timings = {t.version: t for t in sync.timings}
        for version in cfg["policy"]["versions"]:
            t = timings.get(version)
            policy[str(version)] = {
                "received": t.received if t else None,
                "ready": t.ready if t else None,
                "engine": t.engine_backend if t else "",
                "requested": swapper.requested.get(version),
                "loaded": swapper.loaded.get(version),
                "active": swapper.swapped.get(version),
            }
        policy["errors"] = swapper.errors
    counters = dataclasses.asdict(uplink.counters)
    Path(cfg["result"]).write_text(json.dumps({"episodes": results, "uplink": counters, "policy": policy}))
    return 0


# --------------------------------------------------------------------------- learner
class Learner:
    """advance() on every announced version (one thread) and load what it returns (another thread)."""

    def __init__(self, reader, watcher):
        self.reader, self.watcher = reader, watcher
        self.visible_ns: dict[str, int] = {}
        self.loaded: dict[str, dict[str, Any]] = {}
        self.records: dict[str, Any] = {}
        self.snapshot_ns: dict[int, int] = {}
        self._todo: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._guard(self._advance_loop), daemon=True),
            threading.Thread(target=self._guard(self._load_loop), daemon=True),
        ]

    def _guard(self, fn):
        def run():
            try:
                fn()
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.stop.set()

        return run

    def start(self) -> Learner:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)

    def _advance_loop(self) -> None:
        while not self.stop.is_set():
            self.watcher.wait_newer(self.reader.version, 0.5)  # push; the 0.5 s timeout is a polling fallback
            delta = self.reader.advance()
            now = time.time_ns()
            if not delta.records:
                continue
            for v in range(delta.previous + 1, delta.version + 1):
                self.snapshot_ns[v] = self.reader.snapshots.snapshot_info(v).created_at_ns
            for rec in delta.records:
                self.visible_ns[rec.episode_id] = now
                self.records[rec.episode_id] = rec
            self._todo.put(delta.records)

    def _load_loop(self) -> None:
        while not self.stop.is_set():
            try:
                records = self._todo.get(timeout=0.2)
            except queue.Empty:
                continue
            for item in self.reader.load(records):
                self.loaded[item.record.episode_id] = {
                    "ns": time.time_ns(),
                    "status": item.status.value,
                    "error": item.error,
                    "fetch_s": round(item.fetch_s, 3),
                    "decode_s": round(item.decode_s, 3),
                }


# --------------------------------------------------------------------------- orchestration
def _stats(values_ms: list[float]) -> dict[str, Any]:
    if not values_ms:
        return {"n": 0}
    arr = np.asarray(values_ms, np.float64)
    return {
        "n": int(arr.size),
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p99_ms": round(float(np.percentile(arr, 99)), 1),
        "max_ms": round(float(arr.max()), 1),
        "mean_ms": round(float(arr.mean()), 1),
    }


def _announcement_monitor(endpoint, arrivals: dict[str, int]):
    """A read-only MQTT client timestamping every episode announcement as the broker delivers it."""
    from lwd_protocol.names import MqttTopics
    from lwd_protocol.transport import make_mqtt_client, start_mqtt

    client = make_mqtt_client(endpoint)

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        c.subscribe(MqttTopics.all_episodes(), qos=MqttTopics.QOS)

    def on_message(c, userdata, msg) -> None:
        try:
            eid = json.loads(bytes(msg.payload))["episode_id"]
        except (ValueError, KeyError, TypeError):
            return
        arrivals.setdefault(eid, time.time_ns())  # the first copy (a resend is a duplicate)

    client.on_connect, client.on_message = on_connect, on_message
    start_mqtt(client, endpoint)
    return client


def _wait(pred, timeout_s: float, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def run(cfg: BenchConfig) -> dict[str, Any]:
    from lwd_learner.coordinator import CoordinatorConfig
    from lwd_learner.coordinator.runner import write_config
    from lwd_learner.localstack import ManagedProcess, MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3
    from lwd_learner.replay_reader import ReaderConfig, SnapshotReplayReader, SnapshotWatcher
    from lwd_protocol.store import EPISODES_BUCKET, POLICIES_BUCKET
    from lwd_protocol.transport import MqttEndpoint, S3Endpoint

    size = cfg.image_size or sim_camera_size()
    recorder = recorder_defaults()
    frames = frame_pool(cfg.frames, size, cfg.seed, cfg.cache_dir or CACHE)
    artifacts, artifacts_cached = policy_artifacts() if cfg.policy else ({}, False)
    owned = cfg.workdir is None  # a temp workdir holds GBs of episodes: deleted at the end
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="lwd-bench-latency-"))
    robot_ids = [f"robot_{i + 1:02d}" for i in range(cfg.robots)]
    broker = MosquittoBroker(
        workdir / "mosquitto",
        [
            MqttIdentity.generate("coordinator", "coordinator"),
            MqttIdentity.generate("learner", "learner"),
            MqttIdentity.generate("monitor", "monitor"),
        ]
        + [MqttIdentity.generate(r, "robot") for r in robot_ids],
    )
    store = SeaweedS3(
        workdir / "seaweedfs",
        [
            S3Identity.generate("admin", ("Admin", "Read", "List", "Write")),
            S3Identity.generate("coordinator", ("Read", "List")),
            S3Identity.generate(
                "learner",
                (
                    f"Read:{EPISODES_BUCKET}",
                    f"Read:{POLICIES_BUCKET}",
                    f"Write:{POLICIES_BUCKET}",
                    f"List:{POLICIES_BUCKET}",
                ),
            ),
        ]
        + [
            S3Identity.generate(r, (f"Write:{EPISODES_BUCKET}", f"Read:{POLICIES_BUCKET}", f"List:{POLICIES_BUCKET}"))
            for r in robot_ids
        ],
        memory_limit="1GiB",
    )

    def mqtt(user: str, client_id: str, persistent: bool = False) -> MqttEndpoint:
        ident = broker.identity(user)
        return MqttEndpoint(
            broker.host, broker.port, ident.username, ident.password, client_id=client_id, clean_session=not persistent
        )

    def s3(name: str) -> S3Endpoint:
        ident = store.identity(name)
        return S3Endpoint(store.endpoint, ident.access_key, ident.secret_key, region=store.region)

    procs: list = []
    learner = watcher = reader = publisher = monitor = None
    announced_ns: dict[str, int] = {}
    published: dict[int, dict[str, float]] = {}
    publish_errors: list[str] = []
    public_key = workdir / "policy-signing.pub"
    load_before = os.getloadavg()[0]
    t_begin = time.monotonic()
    try:
        broker.start()
        store.start()
        db = workdir / "coordinator" / "snapshots.sqlite"
        coord_cfg = CoordinatorConfig(
            mqtt=mqtt("coordinator", "lwd-coordinator", persistent=True),
            s3=s3("coordinator"),
            db_path=db,
            batch_interval_s=cfg.commit_interval_s,
        )
        coord_json = write_config(workdir / "coordinator" / "coordinator.json", coord_cfg)
        coordinator = ManagedProcess(
            "coordinator",
            [sys.executable, "-m", "lwd_learner.coordinator", "--config", str(coord_json)],
            workdir / "coordinator" / "coordinator.log",
        ).start()
        procs.append(coordinator)
        _wait(lambda: "subscribed to episode announcements" in coordinator.log_tail(100_000), 60, "the Coordinator")
        _wait(db.exists, 30, "the snapshot database")

        monitor = _announcement_monitor(mqtt("monitor", "lwd-bench-monitor"), announced_ns)
        watcher = SnapshotWatcher(mqtt("learner", "lwd-learner-bench")).start()
        reader = SnapshotReplayReader.open(
            db, s3("learner"), ReaderConfig(load_images=cfg.decode_images, workers=2, prefetch=4)
        )
        learner = Learner(reader, watcher).start()
        if cfg.policy:
            from lwd_learner.publish import PolicyPublisher, PublisherConfig
            from lwd_protocol.signing import generate_private_key, save_public_key

            signing_key = generate_private_key()
            save_public_key(public_key, signing_key.public_key())
            publisher = PolicyPublisher(
                PublisherConfig(s3=s3("learner"), mqtt=mqtt("learner", "lwd-publisher-bench"), issued_by="bench"),
                signing_key,
            )
            publisher.prepare()  # a long-running learner holds its view of the policy topics before publishing

        robots = []
        for i, robot_id in enumerate(robot_ids):
            rdir = workdir / "robots" / robot_id
            rdir.mkdir(parents=True)
            rcfg = rdir / "robot.json"
            rcfg.write_text(
                json.dumps(
                    {
                        "robot_id": robot_id,
                        "index": i,
                        "spool": str(rdir / "spool"),
                        "mqtt": dataclasses.asdict(mqtt(robot_id, f"uplink-{robot_id}")),
                        "s3": dataclasses.asdict(s3(robot_id)),
                        "frames": {c: str(p) for c, p in frames.items()},
                        "recorder": recorder,
                        "episode_seconds": cfg.episode_seconds,
                        "episodes": cfg.episodes_per_robot,
                        "offset_s": i * cfg.episode_seconds / cfg.robots,
                        "seed": cfg.seed + i,
                        "ready": str(rdir / "ready"),
                        "go": str(workdir / "robots" / "go.json"),
                        "result": str(rdir / "result.json"),
                        "policy": {
                            "cache_dir": str(rdir / "policies"),
                            "public_key": str(public_key),
                            "versions": list(POLICY_VERSIONS),
                        }
                        if cfg.policy
                        else None,
                    }
                )
            )
            rcfg.chmod(0o600)
            proc = ManagedProcess(robot_id, [sys.executable, __file__, "--robot", str(rcfg)], rdir / "robot.log")
            robots.append((robot_id, rdir, proc.start()))
            procs.append(proc)
        _wait(lambda: all((d / "ready").exists() for _, d, _ in robots), 300, "the robot processes to start")
        go = workdir / "robots" / "go.json"
        t0_mono = time.monotonic() + 1.0
        go.write_text(json.dumps({"t0_ns": time.time_ns() + int(1e9)}))

        def publish_all() -> None:
            for k, version in enumerate(POLICY_VERSIONS):  # a quarter into the 1st and the 2nd episode
                delay = t0_mono + (k + 0.25) * cfg.episode_seconds - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                try:
                    t_call = time.monotonic()
                    publisher.publish(artifacts[version], note="bench_latency")
                    published[version] = {"call": t_call, "announced": time.monotonic()}
                except Exception as exc:
                    publish_errors.append(f"v{version}: {type(exc).__name__}: {exc}")

        publish_thread = threading.Thread(target=publish_all, daemon=True)
        if cfg.policy:
            publish_thread.start()
        print(
            f"[bench] {cfg.robots} robots x {cfg.episodes_per_robot} episodes of {cfg.episode_seconds:.0f} s, "
            f"3 cameras {size}px, recorder {recorder}; workdir {workdir}",
            flush=True,
        )
        expected = cfg.robots * cfg.episodes_per_robot
        last_report = 0.0

        def done() -> bool:
            nonlocal last_report
            if learner.errors:
                raise RuntimeError(f"learner failed: {learner.errors}")
            for robot_id, _, proc in robots:
                if not proc.alive() and proc.popen.returncode != 0:
                    raise RuntimeError(f"{robot_id} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                print(f"[bench] {len(learner.visible_ns)}/{expected} episodes visible to the learner", flush=True)
            return len(learner.loaded) >= expected and all(not p.alive() for _, _, p in robots)

        _wait(done, cfg.timeout_s, f"{expected} episodes to reach the learner", every_s=0.5)
        learner.close()
        if cfg.policy:
            publish_thread.join(30)
        robot_results = {rid: json.loads((rdir / "result.json").read_text()) for rid, rdir, _ in robots}
    finally:
        if learner is not None:
            learner.close()
        if reader is not None:
            reader.close()
        if watcher is not None:
            watcher.stop()
        if publisher is not None:
            publisher.close()
        if monitor is not None:
            from lwd_protocol.transport import stop_mqtt

            stop_mqtt(monitor)
        for proc in reversed(procs):
            proc.stop()
        store.stop()
        broker.stop()
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    runtime_s = time.monotonic() - t_begin

    per_episode = []
    for robot_id, result in robot_results.items():
        for ep in result["episodes"]:
            eid = ep["episode_id"]
            rec = learner.records[eid]
            loaded = learner.loaded[eid]
            commit = ep["commit_ns"]
            per_episode.append(
                {
                    "episode_id": eid,
                    "robot": robot_id,
                    "size_mb": round(rec.size / 1e6, 2),
                    "version": rec.version,
                    "load_status": loaded["status"],
                    "commit_to_verified_ms": round((rec.verified_at_ns - commit) / 1e6, 1),
                    "commit_to_announced_ms": round((announced_ns[eid] - commit) / 1e6, 1)
                    if eid in announced_ns
                    else None,
                    "announced_to_verified_ms": round((rec.verified_at_ns - announced_ns[eid]) / 1e6, 1)
                    if eid in announced_ns
                    else None,
                    "verified_to_snapshot_ms": round((learner.snapshot_ns[rec.version] - rec.verified_at_ns) / 1e6, 1),
                    "snapshot_to_visible_ms": round(
                        (learner.visible_ns[eid] - learner.snapshot_ns[rec.version]) / 1e6, 1
                    ),
                    "commit_to_visible_ms": round((learner.visible_ns[eid] - commit) / 1e6, 1),
                    "commit_to_loaded_ms": round((loaded["ns"] - commit) / 1e6, 1),
                    "learner_fetch_s": loaded["fetch_s"],
                    "learner_decode_s": loaded["decode_s"],
                    "recorder_cpu_s": ep["record_cpu_s"],
                    "recorder_late_s": ep["late_s"],
                }
            )
    failed = [p for p in per_episode if p["load_status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} episodes failed to load in the learner: {failed[:3]}")

    def col(name: str) -> list[float]:
        return [p[name] for p in per_episode if p[name] is not None]

    sizes = col("size_mb")
    policy_report: dict[str, Any] = {"measured": False, "reason": "--no-policy"}
    if cfg.policy:
        policy_report = policy_results(robot_results, published, publish_errors, artifacts, artifacts_cached)
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_label(),
        "config": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
            "image_size": size,
            "cameras": 3,
            "control_hz": CONTROL_HZ,
            "recorder_defaults": recorder,
            "coordinator": {
                "batch_size": coord_cfg.batch_size,
                "batch_interval_s": coord_cfg.batch_interval_s,
                "commit_when_idle": coord_cfg.commit_when_idle,
            },
            "uplink": "EpisodeUplink defaults",
        },
        "episode_to_learner": {
            "definition": "robot commit (atomic rename done) -> the learner's replay reader advance() returned it",
            **_stats(col("commit_to_visible_ms")),
        },
        "episode_to_loaded": {
            "definition": "robot commit -> payload downloaded, sha256-checked and decoded (images too) by the reader",
            **_stats(col("commit_to_loaded_ms")),
        },
        "stages": {
            "commit_to_announced": {
                "where": "robot: uplink upload + MQTT announce",
                **_stats(col("commit_to_announced_ms")),
            },
            "announced_to_verified": {
                "where": "Coordinator: download, sha256, decode",
                **_stats(col("announced_to_verified_ms")),
            },
            "commit_to_verified": _stats(col("commit_to_verified_ms")),
            "verified_to_snapshot": _stats(col("verified_to_snapshot_ms")),
            "snapshot_to_visible": _stats(col("snapshot_to_visible_ms")),
        },
        "episode_size_mb": {"mean": round(float(np.mean(sizes)), 2), "max": round(float(np.max(sizes)), 2)},
        "policy_publish_to_active": policy_report,
        "runtime_s": round(runtime_s, 1),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "episodes": per_episode,
    }


def policy_results(robot_results, published, publish_errors, artifacts, cached) -> dict[str, Any]:
    """publish() call -> received / ready / loaded / active on each robot, in ms (one monotonic clock)."""
    stages = {k: [] for k in ("received", "ready", "loaded", "active")}
    boundary_wait, missing, superseded, errors = [], [], [], list(publish_errors)
    newest = max(published, default=0)
    for robot_id, result in robot_results.items():
        errors += [f"{robot_id}: {e}" for e in result["policy"].get("errors", [])]
        for version, pub in published.items():
            got = result["policy"].get(str(version), {})
            if got.get("active") is None:
                reached_newest = result["policy"].get(str(newest), {}).get("active") is not None
                # a newer version staged before the robot's next boundary replaces it: never active, by design
                (superseded if version < newest and reached_newest else missing).append(f"{robot_id} v{version}")
            for stage, values in stages.items():
                if got.get(stage) is not None:
                    values.append((got[stage] - pub["call"]) * 1e3)
            if got.get("active") is not None and got.get("loaded") is not None:
                boundary_wait.append((got["active"] - got["loaded"]) * 1e3)
    size = sum(f.stat().st_size for p in artifacts.values() for f in p.iterdir()) / max(len(artifacts), 1)
    return {
        "measured": bool(published),
        "definition": (
            "from the learner's publish() call (artifact upload + signed retained announcement) to: received by "
            "the robot's policy sync; ready (downloaded, verified, ONNX Runtime CPU engine built and validated on "
            "the reference I/O); loaded by the controller's PolicyLoader; active (swapped in at the robot's next "
            "episode boundary, so this includes waiting for the episode to end)"
        ),
        "versions": sorted(published),
        "artifact_mb": round(size / 1e6, 2),
        "artifacts_from_cache": cached,
        "publish_call_s": {v: round(p["announced"] - p["call"], 3) for v, p in published.items()},
        **{f"publish_to_{stage}": _stats(values) for stage, values in stages.items()},
        "loaded_to_active_boundary_wait": _stats(boundary_wait),
        "superseded_before_a_boundary": superseded,
        "never_active": missing,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--robot"]:  # internal: one simulated robot process
        return robot_main(Path(argv[1]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--robots", type=int, default=None)
    parser.add_argument("--episode-seconds", type=float, default=None)
    parser.add_argument("--episodes-per-robot", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=0, help="camera px (0: the sim driver's default)")
    parser.add_argument("--frames", choices=("sim", "noise"), default="sim")
    parser.add_argument("--commit-interval", type=float, default=BenchConfig.commit_interval_s)
    parser.add_argument("--decode-images", action="store_true", help="the learner decodes the camera frames too")
    parser.add_argument("--no-policy", action="store_true", help="skip the policy publish -> active half")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 robots x 2 episodes of 10 s (about a minute)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and data here (default: temp, deleted)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = {"robots": 4, "episode_seconds": 10.0, "episodes_per_robot": 2} if args.quick else {}
    defaults = {"robots": 16, "episode_seconds": 60.0, "episodes_per_robot": 2, **quick}
    chosen = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    cfg = BenchConfig(
        **chosen,
        image_size=args.image_size,
        frames=args.frames,
        commit_interval_s=args.commit_interval,
        decode_images=args.decode_images,
        policy=not args.no_policy,
        seed=args.seed,
        workdir=args.workdir,
    )
    out = args.out or Path(__file__).parent / "results" / ("latency_quick.json" if args.quick else "latency.json")
    report = run(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    keys = ("episode_to_learner", "episode_to_loaded", "stages", "episode_size_mb", "policy_publish_to_active")
    summary = {k: report[k] for k in keys}
    print(json.dumps(summary, indent=2))
    print(f"[bench] wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
