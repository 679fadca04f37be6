"""A learner process that survives kill -9: `python -m lwd_learner.chaos.learner_proc --config X.json`.

The chaos run (run.py) SIGKILLs this process at random moments, so everything it must not lose
is either in its Orbax checkpoint or derivable from the data plane:

- train state + RNG key + (snapshot version read, last policy version published, updates) are
  checkpointed every `checkpoint_every` updates; a restart restores the newest complete step
  (Orbax commits a step atomically) and re-reads the episodes of the checkpointed snapshot;
- XLA compilations are cached on disk (jax_compilation_cache_dir), so a restart does not pay
  for the jit compiles again;
- the next policy version is max(checkpoint's last published, highest version folder in the
  policies bucket) + 1. A kill after an upload but before the checkpoint therefore skips that
  version instead of re-publishing it with other bytes (versions are immutable, robots only move
  forward); a publish that failed while alive is retried with the same folder (idempotent).

Training follows the Coordinator's snapshots with SnapshotReplayReader: a round of
`updates_per_round` updates on 1:1 offline:online replay runs when new episodes arrived or
`round_period_s` passed. The network is tiny (CPU, shared cores); the flywheel's learner_config,
offline buffer cache and artifact builder are reused. Every step that the orchestrator measures
is appended to `events.jsonl` (one fsynced JSON line each): start, fresh/compiled/resumed, ingest,
checkpoint, published, publish_failed, stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lwd_learner.config_files import endpoint_from_dict, write_private_json
from lwd_protocol.transport import MqttEndpoint, S3Endpoint

log = logging.getLogger("lwd_learner.chaos.learner")


@dataclass(frozen=True)
class ChaosLearnerConfig:
    workdir: Path  # checkpoints/, artifacts/, events.jsonl
    db_path: Path  # the Coordinator's SQLite snapshot DB (read-only)
    s3: S3Endpoint  # learner identity: reads episodes, writes policies
    mqtt: MqttEndpoint  # learner identity: announces policies
    admin_key_file: Path  # signs manifests and announcements
    tasks: tuple[str, ...] = ("restocking",)
    offline_episodes_per_task: int = 6  # the flywheel's cached offline buffer (quick plan)
    hidden: int = 32  # tiny MLPs: a CPU learner on cores shared with the fleet
    batch_size: int = 32
    sft_updates: int = 200  # first start only: the initial policy v1
    updates_per_round: int = 25
    checkpoint_every: int = 25  # updates
    publish_every: int = 50  # updates
    round_period_s: float = 10.0  # train at least this often, new data or not
    max_updates: int = 5000  # then only follow snapshots
    online_fraction: float = 0.5
    seed: int = 0

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.workdir) / "checkpoints"

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.workdir) / "artifacts"

    @property
    def events_file(self) -> Path:
        return Path(self.workdir) / "events.jsonl"


def write_config(path: Path, cfg: ChaosLearnerConfig) -> Path:
    """JSON readable by its owner only (it holds the learner's credentials)."""
    return write_private_json(path, dataclasses.asdict(cfg))


def read_config(path: Path) -> ChaosLearnerConfig:
    data = json.loads(Path(path).read_text())
    for name in ("workdir", "db_path", "admin_key_file"):
        data[name] = Path(data[name])
    data["tasks"] = tuple(data["tasks"])
    data["s3"] = endpoint_from_dict(S3Endpoint, data["s3"], "s3")
    data["mqtt"] = endpoint_from_dict(MqttEndpoint, data["mqtt"], "mqtt")
    return ChaosLearnerConfig(**data)


# --------------------------------------------------------------------------- event log
class EventLog:
    """Append-only JSON lines, fsynced: the orchestrator's view of what this process did and when."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": time.time(), "pid": os.getpid(), "event": event, **fields})
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("%s %s", event, fields)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete line; a line torn by kill -9 mid-write is skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


# --------------------------------------------------------------------------- the learner
class ChaosLearner:
    def __init__(self, cfg: ChaosLearnerConfig, stop: threading.Event) -> None:
        self.cfg = cfg
        self.stop = stop
        self.events = EventLog(cfg.events_file)
        self.updates = 0
        self.snapshot = 0
        self.published = 0  # last version announced by this learner (any incarnation)
        self.pending: tuple[int, Path] | None = None  # built, not yet announced (publish failed)
        self.loaded: set[str] = set()
        self.failed_loads = 0

    # --- setup ---------------------------------------------------------------------------
    def _setup(self) -> None:
        import jax

        # compiled XLA programs persist beside the checkpoints: a restarted learner skips the compiles
        jax.config.update("jax_compilation_cache_dir", str(Path(self.cfg.workdir) / "xla_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

        from lwd_learner.agent import LWDAgent
        from lwd_learner.checkpoint import Checkpointer
        from lwd_learner.dataset import compute_normalizer, load_episodes
        from lwd_learner.flywheel.learner_loop import LearnerPlan, _cache_root, ensure_offline_buffer, learner_config
        from lwd_learner.replay import MixedSampler, ReplayBuffer, paper_n_step
        from lwd_learner.replay_reader import ReaderConfig, SnapshotReplayReader
        from lwd_protocol.robot_spec import CHUNK_HORIZON
        from lwd_protocol.signing import load_private_key

        cfg = self.cfg
        self.plan = LearnerPlan(
            tasks=cfg.tasks,
            offline_episodes_per_task=cfg.offline_episodes_per_task,
            hidden=cfg.hidden,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
        self.offline_episodes = load_episodes(self._pinned_offline(ensure_offline_buffer, _cache_root()))
        self.normalizer = compute_normalizer(self.offline_episodes)
        # one (online) config for SFT and RL, so every checkpoint restores into the same structure
        self.agent = LWDAgent(learner_config(self.normalizer, self.plan, online=True))
        gamma = self.agent.config.value.gamma
        offline = ReplayBuffer(self.normalizer, CHUNK_HORIZON, gamma)
        offline.add_episodes(self.offline_episodes)
        offline.set_n_step(paper_n_step(1, 1))
        self.online = ReplayBuffer(self.normalizer, CHUNK_HORIZON, gamma)
        self.sampler = MixedSampler(offline, self.online, cfg.online_fraction)
        self.checkpointer = Checkpointer(cfg.checkpoint_dir, max_to_keep=3)
        self.reader = SnapshotReplayReader.open(
            cfg.db_path, cfg.s3, ReaderConfig(load_images=False, retries=2, backoff_initial_s=0.2, backoff_max_s=1.0)
        )
        self.private_key = load_private_key(cfg.admin_key_file)
        self.key = jax.random.PRNGKey(cfg.seed)

    def _pinned_offline(self, ensure_offline_buffer, cache_root: Path) -> list[Path]:
        """The offline buffer of this learner's first start, copied beside its checkpoints.

        The normaliser and so the network's input size come from it; re-deriving it from the shared
        cache on a restart would follow whatever the simulator's source is by then and no longer
        match the checkpoint (seen when the sim's state layout changed during a run).
        """
        pinned = Path(self.cfg.workdir) / "offline"
        if not (pinned / "COMPLETE").exists():
            tmp = Path(self.cfg.workdir) / f".offline-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for path in ensure_offline_buffer(self.plan, cache_root, log.info):
                shutil.copy2(path, tmp / path.name)
            (tmp / "COMPLETE").write_text("")
            shutil.rmtree(pinned, ignore_errors=True)
            tmp.rename(pinned)
        return sorted(pinned.glob("*.mcap"))

    def _fresh(self) -> None:
        """First start: SFT on the demonstrations -> start RL -> publish the initial policy -> checkpoint 0."""
        import jax

        from lwd_learner.replay import ReplayBuffer
        from lwd_learner.stages import SFTConfig, run_sft
        from lwd_protocol.episode import EpisodeSource
        from lwd_protocol.robot_spec import CHUNK_HORIZON

        demos = ReplayBuffer(self.normalizer, CHUNK_HORIZON, self.agent.config.value.gamma)
        demos.add_episodes([e for e in self.offline_episodes if e.source is EpisodeSource.DEMO])
        k_init, k_sft, self.key = jax.random.split(self.key, 3)
        state = self.agent.init(k_init)
        t0 = time.monotonic()
        state, _ = run_sft(self.agent, state, demos, SFTConfig(self.cfg.sft_updates, self.cfg.batch_size), k_sft)
        self.state = self.agent.start_rl(state)
        self.events.write("fresh", sft_updates=self.cfg.sft_updates, sft_s=round(time.monotonic() - t0, 2))
        self._warm_compile_cache()
        self._publish_until_done()
        self._checkpoint()

    def _warm_compile_cache(self) -> None:
        """Compile the RL update once now, into the on-disk XLA cache: every later incarnation loads it
        instead of compiling (tens of seconds on shared cores) before it can checkpoint again."""
        import jax

        from lwd_learner.replay import to_agent_batch
        from lwd_learner.stages import numpy_rng

        t0 = time.monotonic()
        batch = to_agent_batch(self.sampler.sample(numpy_rng(jax.random.PRNGKey(0)), self.cfg.batch_size))
        self.agent.update.lower(self.state, batch, jax.random.PRNGKey(0)).compile()
        self.events.write("compiled", update_compile_s=round(time.monotonic() - t0, 2))

    def _resume(self, step: int) -> None:
        import jax

        restored = self.checkpointer.restore(jax.eval_shape(self.agent.init, self.key), step, self.agent.config)
        # Orbax hands back arrays committed to a device; jit then lowers with explicit shardings, a different
        # program than the fresh run's, which would miss the on-disk compile cache. Uncommitted copies hit it.
        self.state = jax.tree.map(lambda x: jax.numpy.asarray(jax.device_get(x)), restored.state)
        self.key = restored.key
        self.updates = restored.step
        self.snapshot = int(restored.extra.get("snapshot", 0))
        self.published = int(restored.extra.get("published_version", 0))
        records = self.reader.bind(self.snapshot) if self.snapshot else []
        added = self._load(records)
        self.events.write(
            "resumed",
            step=self.updates,
            snapshot=self.snapshot,
            published_version=self.published,
            reloaded=added,
            of=len(records),
        )

    # --- data ----------------------------------------------------------------------------
    def _load(self, records) -> int:
        from lwd_learner.dataset import from_episode

        added = 0
        for item in self.reader.load(records):
            if not item.ok:
                self.failed_loads += 1
                continue
            if item.record.episode_id in self.loaded:
                continue
            try:
                self.online.add_episode(from_episode(item.episode))
            except (ValueError, KeyError) as exc:  # DatasetError too: does not fit (e.g. another state layout)
                self.loaded.add(item.record.episode_id)
                self.events.write("episode_unusable", episode_id=item.record.episode_id, error=str(exc)[:200])
                continue
            self.loaded.add(item.record.episode_id)
            added += 1
        return added

    def _ingest(self) -> int:
        """Advance to the newest committed snapshot, load its delta, retry earlier failures."""
        try:
            delta = self.reader.advance()
        except Exception as exc:  # DB briefly unreadable (Coordinator mid-commit / restarting)
            log.warning("snapshot advance failed: %s", exc)
            return 0
        added = self._load(delta.records) if delta.changed else 0
        if self.reader.failures:
            added += self._load([f.record for f in self.reader.failures.values()])
        if delta.changed or added:
            self.snapshot = self.reader.version
            self.events.write(
                "ingest",
                snapshot=self.snapshot,
                added=added,
                online_episodes=len(self.loaded),
                failing=len(self.reader.failures),
            )
        return added

    # --- train / checkpoint / publish ------------------------------------------------------
    def _train_round(self) -> None:
        import jax

        from lwd_learner.replay import to_agent_batch
        from lwd_learner.stages import numpy_rng

        self.key, k_rng, k_steps = jax.random.split(self.key, 3)
        rng = numpy_rng(k_rng)
        for k in jax.random.split(k_steps, self.cfg.updates_per_round):
            if self.stop.is_set() or self.updates >= self.cfg.max_updates:
                break
            batch = to_agent_batch(self.sampler.sample(rng, self.cfg.batch_size))
            self.state, _ = self.agent.update(self.state, batch, k)
            self.updates += 1
            if self.updates % self.cfg.publish_every == 0:
                self._publish_once()
            if self.updates % self.cfg.checkpoint_every == 0:
                self._checkpoint()

    def _checkpoint(self) -> None:
        from lwd_learner.checkpoint_policy import policy_extra

        t0 = time.monotonic()
        extra = {"snapshot": self.snapshot, "published_version": self.published}
        meta = {**policy_extra(self.normalizer, self.snapshot), **extra}  # exportable by `lwd admin push --checkpoint`
        if not self.checkpointer.save(self.updates, self.state, key=self.key, config=self.agent.config, extra=meta):
            self.events.write("checkpoint_exists", step=self.updates, **extra)  # steps are immutable
            return
        self.events.write("checkpoint", step=self.updates, save_s=round(time.monotonic() - t0, 3), **extra)

    def _publisher(self):
        from lwd_learner.publish import PolicyPublisher, PublisherConfig

        config = PublisherConfig(s3=self.cfg.s3, mqtt=self.cfg.mqtt, issued_by="learner")
        return PolicyPublisher(config, self.private_key)

    def _next_version(self) -> int:
        """Above every version this learner announced and every folder in the bucket (even a partial one)."""
        with self._publisher() as publisher:
            stored = publisher.stored_versions()
        return max([self.published, *stored]) + 1

    def _build(self, version: int) -> Path:
        from lwd_learner.artifact import build_artifact
        from lwd_protocol.signing import sign_manifest

        folder = self.cfg.artifacts_dir / f"v{version:06d}"
        if folder.exists():  # built by a killed incarnation, never uploaded (else the bucket had it)
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        build_artifact(
            folder,
            self.agent,
            self.state.policy_params,
            normalization=self.normalizer.to_manifest(),
            observation=self.normalizer.observation_spec(),
            action=self.normalizer.action_spec(),
            version=version,
            parent_version=self.published,
            training_snapshot=self.snapshot,
            algorithm="lwd (DIVL + QAM), chaos learner",
            sign=functools.partial(sign_manifest, private_key=self.private_key),
        )
        return folder

    def _publish_once(self) -> bool:
        """Build (unless a failed one is pending) and publish; False (logged) if the store or broker is down."""
        t0 = time.monotonic()
        version = None
        try:
            if self.pending is None:
                version = self._next_version()
                self.pending = (version, self._build(version))
            version, folder = self.pending
            built_s = time.monotonic() - t0
            with self._publisher() as publisher:
                publisher.publish(folder, note=f"chaos learner, snapshot {self.snapshot}, update {self.updates}")
        except Exception as exc:
            self.events.write("publish_failed", version=version, error=f"{type(exc).__name__}: {exc}"[:300])
            return False
        self.pending = None
        self.published = version
        self.events.write(
            "published",
            version=version,
            snapshot=self.snapshot,
            step=self.updates,
            build_s=round(built_s, 3),
            total_s=round(time.monotonic() - t0, 3),
        )
        return True

    def _publish_until_done(self, retry_s: float = 2.0) -> None:
        while not self.stop.is_set() and not self._publish_once():
            self.stop.wait(retry_s)

    # --- main loop -------------------------------------------------------------------------
    def run(self) -> int:
        self.events.write("start")
        self._setup()
        step = self.checkpointer.latest_step()
        if step is None:
            self._fresh()
        else:
            self._resume(step)
        last_round = float("-inf")  # first round right away: a restart proves itself with a checkpoint
        new_since_round = 0
        while not self.stop.is_set():
            new_since_round += self._ingest()
            if self.pending is not None:
                self._publish_once()
            due = new_since_round > 0 or time.monotonic() - last_round >= self.cfg.round_period_s
            if due and self.updates < self.cfg.max_updates:
                self._train_round()
                last_round, new_since_round = time.monotonic(), 0
            self.stop.wait(1.0)
        self._checkpoint()
        self.checkpointer.close()
        self.reader.close()
        self.events.write(
            "stopped",
            step=self.updates,
            snapshot=self.snapshot,
            published_version=self.published,
            online_episodes=len(self.loaded),
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lwd_learner.chaos.learner_proc", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="JSON written by write_config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return ChaosLearner(read_config(args.config), stop).run()


if __name__ == "__main__":
    sys.exit(main())
