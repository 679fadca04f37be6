"""Live terminal view of the flywheel (rich): stage and losses, fleet, scores by policy version, latencies."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

from rich.console import Group
from rich.table import Table

from lwd_learner.flywheel.fleet import RosFleet
from lwd_learner.flywheel.learner_loop import EpisodeLogRow, LearnerProgress
from lwd_learner.flywheel.stack import CloudStack

# names as the agent updates report them (flow-matching BC; DIVL value and critic; QAM)
SHOWN_METRICS = ("fm_loss", "v_loss", "q_loss", "qam_loss", "tau_mean", "q_mean")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def scores_by_task_version(rows: list[EpisodeLogRow]) -> dict[tuple[str, int], tuple[int, float, float]]:
    """(task, policy version) -> (episodes, success rate, mean step-wise score)."""
    groups: dict[tuple[str, int], list[EpisodeLogRow]] = defaultdict(list)
    for row in rows:
        groups[(row.task, row.policy_version)].append(row)
    return {
        k: (len(v), sum(r.success for r in v) / len(v), statistics.fmean(r.score for r in v))
        for k, v in sorted(groups.items())
    }


def render(progress: LearnerProgress, stack: CloudStack, fleet: RosFleet, started: float) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]LWD flywheel[/] {time.monotonic() - started:6.0f} s",
        f"stage: [cyan]{progress.stage}[/]",
        f"step {progress.step}/{progress.total}" if progress.total else "",
        f"policy v{progress.version}",
        f"snapshot {stack.coordinator.current_version() if stack.coordinator else 0}",
    )
    metrics = "  ".join(f"{k}={v:.4g}" for k, v in progress.metrics.items() if k in SHOWN_METRICS)

    robots = Table(title="fleet", expand=False)
    for col in ("robot", "alive", "committed", "quarantined", "spool", "mean score", "human %"):
        robots.add_column(col, justify="right")
    stats = stack.coordinator.robot_stats() if stack.coordinator else {}
    alive, spool = fleet.alive(), fleet.pending_uploads()
    for robot in fleet.ids:
        rows = [r for r in progress.episodes if r.robot == robot]
        st = stats.get(robot)
        steps = sum(r.steps for r in rows)
        robots.add_row(
            robot,
            "yes" if alive.get(robot) else "[red]no[/]",
            str(getattr(st, "committed", 0)),
            str(getattr(st, "quarantined", 0)),
            str(spool.get(robot, 0)),
            f"{statistics.fmean(r.score for r in rows):.2f}" if rows else "-",
            f"{100 * sum(r.human_steps for r in rows) / steps:.0f}" if steps else "-",
        )

    scores = Table(title="success / step-wise score by task and policy version")
    for col in ("task", "version", "episodes", "success", "score"):
        scores.add_column(col, justify="right")
    for (task, version), (n, success, score) in scores_by_task_version(progress.episodes).items():
        scores.add_row(task, f"v{version}", str(n), f"{success:.2f}", f"{score:.2f}")

    lat = [r.ingest_latency_s for r in progress.episodes]
    build = [p["build_publish_s"] for p in progress.published]
    swap = [x["publish_to_active_s"] for x in progress.swaps]
    active = " ".join(f"{r}:v{v}" for r, v in sorted(progress.active.items()))
    latency = (
        f"episode -> snapshot: p50 {percentile(lat, 50):.1f} s  p99 {percentile(lat, 99):.1f} s  (n={len(lat)})   "
        f"export+sign+publish: p50 {percentile(build, 50):.1f} s   "
        f"published -> active (at an episode boundary): p50 {percentile(swap, 50):.1f} s (n={len(swap)})   "
        f"active: {active or '-'}"
    )
    return Group(head, metrics, robots, scores, latency)
