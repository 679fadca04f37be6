"""The flywheel's learner: offline stage, then online rounds fed by the Coordinator's snapshots.

Alg. 1 of the paper with the real data plane in the loop: SFT on the offline demonstrations ->
freeze the reference -> offline DIVL+QAM on the whole offline buffer -> export + sign + publish
v1 -> online rounds: the reader advances to the newest committed snapshot and loads only the new
episodes into the online buffer; once a round's worth arrived, train on 1:1 offline:online replay
(same objective, online tau/n-step) and publish a new version every `publish_every` updates;
robots pick it up at their next episode boundary. Every ingested episode is logged (robot, task,
outcome, score, the policy version that drove it, intervention steps, ingest latency) for the
live view and the report.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lwd_learner.agent import LWDAgent, TrainState
from lwd_learner.artifact import build_artifact
from lwd_learner.config import LearnerConfig, NetworkConfig
from lwd_learner.dataset import EpisodeArrays, Normalizer, compute_normalizer, from_episode, load_episodes
from lwd_learner.flywheel.stack import CloudStack
from lwd_learner.publish import PolicyPublisher, PublisherConfig
from lwd_learner.replay import MixedSampler, ReplayBuffer, paper_n_step, to_agent_batch
from lwd_learner.replay_reader import ReaderConfig, SnapshotReplayReader
from lwd_learner.stages import OfflineConfig, SFTConfig, StageLog, numpy_rng, run_offline, run_sft
from lwd_protocol.episode import ActionSource, EpisodeSource
from lwd_protocol.episode_io import Episode
from lwd_protocol.robot_spec import CHUNK_HORIZON
from lwd_protocol.signing import load_private_key, sign_manifest

LIVE_LOG_EVERY = 25  # updates per loss window shown in the live view


@dataclass(frozen=True)
class LearnerPlan:
    tasks: tuple[str, ...] = ("restocking", "gongfu_tea")
    offline_episodes_per_task: int = 12
    hidden: int = 256
    batch_size: int = 128
    sft_updates: int = 1500
    offline_updates: int = 600
    online_rounds: int = 3
    episodes_per_round: int = 8  # fleet-wide new episodes, driven by the round's deployed policy, that close a round
    updates_per_round: int = 100
    publish_every: int = 50  # Sec. V-A: broadcast every 50 training steps
    online_fraction: float = 0.5  # ~1:1 offline:online (App. B2)
    round_timeout_s: float = 600.0
    seed: int = 0


@dataclass
class EpisodeLogRow:
    robot: str
    task: str
    outcome: str
    score: float
    success: bool
    policy_version: int
    policy_versions: list[int]  # distinct versions on the steps the policy drove (one: swaps wait for a boundary)
    steps: int
    human_steps: int  # steps a person (or the sim's virtual teleoperator) drove, incl. episodes with no policy
    ingest_latency_s: float  # committed on the robot -> in a committed snapshot the learner can read
    snapshot: int
    received_at: float


@dataclass
class LearnerProgress:
    """Shared with the live view (read from another thread; writes are single assignments)."""

    stage: str = "starting"
    step: int = 0
    total: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    version: int = 0
    snapshot: int = 0
    published: list[dict[str, Any]] = field(default_factory=list)
    episodes: list[EpisodeLogRow] = field(default_factory=list)
    stage_logs: dict[str, Any] = field(default_factory=dict)
    quarantined_loads: int = 0
    active: dict[str, int] = field(default_factory=dict)  # robot -> policy version it reports active
    swaps: list[dict[str, Any]] = field(default_factory=list)  # {robot, version, publish_to_active_s}
    robot_status: dict[str, dict[str, Any]] = field(default_factory=dict)  # robot -> policy sync's last report


def sim_fingerprint() -> str:
    """Hash of the simulator's source: a changed task or state layout must not reuse old episodes."""
    import lwd_sim

    digest = hashlib.sha256()
    for path in sorted(Path(lwd_sim.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def offline_cache_dir(plan: LearnerPlan, root: Path) -> Path:
    key = json.dumps(
        {"tasks": plan.tasks, "n": plan.offline_episodes_per_task, "seed": plan.seed, "sim": sim_fingerprint()},
        sort_keys=True,
    )
    return root / f"offline-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def ensure_offline_buffer(plan: LearnerPlan, cache_root: Path, say: Callable[[str], None]) -> list[Path]:
    """Generate the offline buffer once (paper Table IV composition), reuse it on later runs."""
    out = offline_cache_dir(plan, cache_root)
    done = out / "COMPLETE"
    if not done.exists():
        from lwd_sim.generate import GenConfig, generate

        say(f"generating the offline buffer into {out} (scripted experts, {plan.offline_episodes_per_task}/task)")
        tmp = Path(tempfile.mkdtemp(prefix="offline-", dir=cache_root))
        gen = GenConfig(out=tmp, episodes_per_task=plan.offline_episodes_per_task, tasks=plan.tasks)
        stats = generate(gen, workers=min(len(plan.tasks), os.cpu_count() or 1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        done.write_text(json.dumps(stats.as_dict()))
    return sorted(out.rglob("*.mcap"))


def learner_config(normalizer: Normalizer, plan: LearnerPlan, online: bool) -> LearnerConfig:
    h = plan.hidden
    network = NetworkConfig(
        obs_dim=normalizer.obs_dim,
        horizon=CHUNK_HORIZON,
        action_dim=normalizer.action_dim,
        policy_hidden=(h, h, h),
        critic_hidden=(h, h),
        value_hidden=(h,),
        obs_hidden=(h,),
        obs_embed_dim=h,
    )
    base = LearnerConfig.online() if online else LearnerConfig.offline()
    return dataclasses.replace(base, network=network)


class FlywheelLearner:
    def __init__(self, plan: LearnerPlan, stack: CloudStack, workdir: Path, say: Callable[[str], None] = print):
        self.plan = plan
        self.stack = stack
        self.workdir = Path(workdir)
        self.say = say
        self.progress = LearnerProgress()
        self.stop_event = threading.Event()
        self.key = jax.random.PRNGKey(plan.seed)
        self.agent: LWDAgent | None = None
        self.final_state: TrainState | None = None
        self.normalizer: Normalizer | None = None
        self.offline_episodes: list[EpisodeArrays] = []
        self.online_buffer: ReplayBuffer | None = None

    def value_traces(self) -> dict:
        """Fig. 6 data for a successful and a failed long-horizon episode (empty without one)."""
        if self.agent is None or self.final_state is None or self.online_buffer is None:
            return {}
        from lwd_learner.bench_learning import value_traces

        return value_traces(
            self.agent, self.final_state, self.normalizer, self.online_buffer.episodes, self.offline_episodes
        )

    # --- publication --------------------------------------------------------------------------
    def _checkpoint(
        self, agent: LWDAgent, state: TrainState, normalizer: Normalizer, snapshot: int, version: int
    ) -> None:
        """Keep the published state as an Orbax checkpoint (step = version) for `lwd admin push --checkpoint`."""
        from lwd_learner.checkpoint import Checkpointer
        from lwd_learner.checkpoint_policy import policy_extra

        extra = {**policy_extra(normalizer, snapshot), "published_version": version}
        with Checkpointer(self.workdir / "checkpoints", max_to_keep=None) as checkpointer:
            checkpointer.save(version, state, key=self.key, config=agent.config, extra=extra)

    def _publish(self, agent: LWDAgent, state: TrainState, normalizer: Normalizer, snapshot: int) -> None:
        version = self.progress.version + 1
        folder = self.workdir / "artifacts" / f"v{version:06d}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        private_key = load_private_key(self.stack.admin_key_file)
        build_artifact(
            folder,
            agent,
            state.policy_params,
            normalization=normalizer.to_manifest(),
            observation=normalizer.observation_spec(),
            action=normalizer.action_spec(),
            version=version,
            parent_version=self.progress.version,
            training_snapshot=snapshot,
            algorithm="lwd (DIVL + QAM)",
            sign=functools.partial(sign_manifest, private_key=private_key),
        )
        config = PublisherConfig(
            s3=self.stack.store.s3_endpoint("learner"), mqtt=self.stack.mqtt("learner"), issued_by="learner"
        )
        with PolicyPublisher(config, private_key) as publisher:
            publisher.publish(folder, note=f"snapshot {snapshot}")
        self._checkpoint(agent, state, normalizer, snapshot, version)
        self.progress.version = version
        self.progress.published.append(
            {"version": version, "snapshot": snapshot, "at": time.time(), "build_publish_s": time.monotonic() - t0}
        )
        self.say(f"published policy v{version} (trained through snapshot {snapshot})")

    # --- fleet watch: which version each robot runs (retained MQTT status from policy_sync) ----
    def poll_fleet(self, publisher: PolicyPublisher) -> None:
        published_at = {p["version"]: p["at"] for p in self.progress.published}
        for robot, status in publisher.robot_statuses().items():
            if isinstance(status, str):
                continue
            self.progress.robot_status[robot] = {
                "active_version": status.active_version,
                "pending_version": status.pending_version,
                "state": status.state,
            }
            version = status.active_version
            if version and self.progress.active.get(robot) != version:
                self.progress.active[robot] = version
                if version in published_at:
                    self.progress.swaps.append(
                        {"robot": robot, "version": version, "publish_to_active_s": time.time() - published_at[version]}
                    )

    def watch_fleet(self, stop: threading.Event, period_s: float = 1.0) -> None:
        """Background thread: poll the robots' retained status so swap times are caught as they happen."""
        config = PublisherConfig(s3=self.stack.store.s3_endpoint("learner"), mqtt=self.stack.mqtt("learner"),
                                 issued_by="learner", retained_quiet_s=0.2)  # fmt: skip
        with PolicyPublisher(config, None) as publisher:
            while not stop.wait(period_s):
                try:
                    self.poll_fleet(publisher)
                except Exception as exc:
                    self.say(f"fleet status poll failed: {exc}")

    def wait_fleet_active(self, robots: list[str], timeout_s: float) -> bool:
        """Until every robot reports the newest version active (swapped at an episode boundary)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if all(self.progress.active.get(r) == self.progress.version for r in robots):
                return True
            time.sleep(1.0)
        return False

    # --- stages -------------------------------------------------------------------------------
    def _show_stage(self, log: StageLog) -> None:
        """The live view's step counter and newest loss window during the SFT and offline stages."""
        self.progress.step = log.updates
        if log.history:
            self.progress.metrics = {k: v for k, v in log.history[-1].items() if k not in ("step", "window")}

    def run(self) -> None:
        plan, prog = self.plan, self.progress
        prog.stage = "offline data"
        paths = ensure_offline_buffer(plan, _cache_root(), self.say)
        episodes = load_episodes(paths)
        normalizer = compute_normalizer(episodes)
        gamma = LearnerConfig().value.gamma
        demos = ReplayBuffer(normalizer, CHUNK_HORIZON, gamma)
        demos.add_episodes([e for e in episodes if e.source is EpisodeSource.DEMO])
        offline = ReplayBuffer(normalizer, CHUNK_HORIZON, gamma)
        offline.add_episodes(episodes)
        self.offline_episodes = episodes
        self.say(f"offline buffer: {len(episodes)} episodes, {offline.num_steps} steps ({demos.num_episodes} demos)")

        agent = LWDAgent(learner_config(normalizer, plan, online=False))
        k_init, k_sft, k_off, k_on = jax.random.split(self.key, 4)
        state = agent.init(k_init)
        prog.stage, prog.total = "SFT", plan.sft_updates
        sft_cfg = SFTConfig(plan.sft_updates, plan.batch_size, log_every=LIVE_LOG_EVERY)
        state, sft_log = run_sft(agent, state, demos, sft_cfg, k_sft, on_update=self._show_stage)
        prog.stage_logs["sft"] = sft_log.to_dict()
        state = agent.start_rl(state)
        prog.stage, prog.total = "offline RL", plan.offline_updates
        off_cfg = OfflineConfig(plan.offline_updates, plan.batch_size, log_every=LIVE_LOG_EVERY)
        state, off_log = run_offline(agent, state, offline, off_cfg, k_off, on_update=self._show_stage)
        prog.stage_logs["offline"] = off_log.to_dict()
        prog.stage = "publishing"
        self._publish(agent, state, normalizer, snapshot=0)
        self.offline_state = state
        self._online(state, normalizer, offline, k_on)

    def _ingest(self, reader: SnapshotReplayReader, online: ReplayBuffer) -> list[EpisodeLogRow]:
        """Load the episodes the newest snapshot added into the online buffer; returns their log rows."""
        delta = reader.advance()
        if not delta.changed:
            return []
        added: list[EpisodeLogRow] = []
        now = time.time()
        created: dict[int, int] = {}

        def snapshot_ns(version: int | None) -> int:
            v = version or delta.version
            if v not in created:
                created[v] = reader.snapshots.snapshot_info(v).created_at_ns
            return created[v]

        for loaded in reader.load(delta.records):
            if not loaded.ok:
                self.progress.quarantined_loads += 1
                self.say(f"episode {loaded.record.episode_id} not loaded: {loaded.status.value} {loaded.error}")
                continue
            ep = from_episode(loaded.episode)
            online.add_episode(ep)
            rec = loaded.record
            added.append(
                EpisodeLogRow(
                    robot=rec.robot_id,
                    task=ep.task,
                    outcome=rec.outcome,
                    score=float(ep.score),
                    success=bool(ep.success),
                    policy_version=int(ep.policy_version),
                    policy_versions=_policy_versions(loaded.episode),
                    steps=int(ep.length),
                    human_steps=int(np.sum(ep.action_source == ActionSource.HUMAN)),
                    ingest_latency_s=max(0.0, (snapshot_ns(rec.version) - rec.committed_at_ns) / 1e9),
                    snapshot=delta.version,
                    received_at=now,
                )
            )
            self.progress.episodes.append(added[-1])
        self.progress.snapshot = delta.version
        return added

    def _online(self, state: TrainState, normalizer: Normalizer, offline: ReplayBuffer, key):
        plan, prog = self.plan, self.progress
        agent = LWDAgent(learner_config(normalizer, plan, online=True))
        gamma = agent.config.value.gamma
        online = ReplayBuffer(normalizer, CHUNK_HORIZON, gamma)
        self.online_buffer = online
        offline.set_n_step(paper_n_step(1, 1))
        sampler = MixedSampler(offline, online, plan.online_fraction)
        reader = SnapshotReplayReader.open(
            self.stack.coordinator_db, self.stack.store.s3_endpoint("learner"), ReaderConfig(load_images=False)
        )
        k_rng, k_steps = jax.random.split(key)
        rng = numpy_rng(k_rng)
        watch_stop = threading.Event()
        watcher = threading.Thread(target=self.watch_fleet, args=(watch_stop,), name="fleet-watch", daemon=True)
        watcher.start()
        try:
            for r in range(plan.online_rounds):
                prog.stage, prog.step, prog.total = f"online round {r + 1}/{plan.online_rounds}: collecting", 0, 0
                # only episodes the round's policy drove close it: robots record from boot (human/teleop
                # episodes, older versions) and those are ingested too, but they are not this round's data
                deployed, have = prog.version, 0
                deadline = time.monotonic() + plan.round_timeout_s
                while have < plan.episodes_per_round and time.monotonic() < deadline:
                    if self.stop_event.is_set():
                        return
                    have += sum(row.policy_version >= deployed for row in self._ingest(reader, online))
                    prog.stage = (
                        f"online round {r + 1}/{plan.online_rounds}: collecting {have}/{plan.episodes_per_round}"
                    )
                    time.sleep(1.0)
                if len(online) == 0:
                    self.say("no online episode arrived within the round timeout; training on offline data only")
                prog.stage, prog.total = f"online round {r + 1}/{plan.online_rounds}: training", plan.updates_per_round
                for i, k in enumerate(jax.random.split(jax.random.fold_in(k_steps, r), plan.updates_per_round)):
                    if self.stop_event.is_set():
                        return
                    state, metrics = agent.update(state, to_agent_batch(sampler.sample(rng, plan.batch_size)), k)
                    prog.step = i + 1
                    if (i + 1) % 10 == 0:
                        prog.metrics = {kk: float(v) for kk, v in metrics.items()}
                    if (i + 1) % plan.publish_every == 0:
                        prog.stage = f"online round {r + 1}/{plan.online_rounds}: publishing"
                        self._publish(agent, state, normalizer, snapshot=reader.version)
                        prog.stage = f"online round {r + 1}/{plan.online_rounds}: training"
            prog.stage = f"waiting for every robot to run v{prog.version}"
            if not self.wait_fleet_active(self.stack.robot_ids, plan.round_timeout_s):
                self.say(f"not every robot reported v{prog.version} active: {prog.active}")
            # the loop is closed when every robot's data reached a snapshot the learner read
            prog.stage = "waiting for an episode from every robot"
            deadline = time.monotonic() + plan.round_timeout_s
            while time.monotonic() < deadline and not self.stop_event.is_set():
                self._ingest(reader, online)
                if set(self.stack.robot_ids) <= {e.robot for e in prog.episodes}:
                    break
                time.sleep(1.0)
            else:
                missing = set(self.stack.robot_ids) - {e.robot for e in prog.episodes}
                self.say(f"robots without an ingested episode: {sorted(missing)}")
        finally:
            watch_stop.set()
            watcher.join(timeout=10)
            self.final_state, self.agent, self.normalizer = state, agent, normalizer
            reader.close()
            prog.stage = "done"


def _policy_versions(episode: Episode) -> list[int]:
    """Versions that drove the episode's policy steps: the recorder's end record, else the steps."""
    if episode.end is not None:
        return list(episode.end.policy_versions)
    policy_steps = episode.action_source == ActionSource.POLICY
    return sorted({int(v) for v in episode.policy_version[policy_steps] if v})


def _cache_root() -> Path:
    root = Path.home() / ".cache" / "lwd-fleet"
    root.mkdir(parents=True, exist_ok=True)
    return root
