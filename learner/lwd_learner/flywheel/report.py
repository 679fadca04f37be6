"""The flywheel's report directory: markdown + PNG plots + the raw numbers as JSON."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from lwd_learner.flywheel.learner_loop import EpisodeLogRow, LearnerProgress
from lwd_learner.flywheel.progress import percentile, scores_by_task_version
from lwd_protocol.robot_spec import CONTROL_RATE_HZ


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_score_by_version(rows: list[EpisodeLogRow], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for task in sorted({r.task for r in rows}):
        table = {v: s for (t, v), (_, _, s) in scores_by_task_version(rows).items() if t == task}
        versions = sorted(table)
        ax.plot(versions, [table[v] for v in versions], marker="o", label=task)
    ax.set_xlabel("policy version that drove the episode (0 = no policy: operator only)")
    ax.set_ylabel("mean step-wise score")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def robot_hours(rows: list[EpisodeLogRow]) -> np.ndarray:
    """Cumulative robot-hours of online data after each episode (rows in arrival order)."""
    return np.cumsum([r.steps for r in rows]) / CONTROL_RATE_HZ / 3600.0


def moving_mean(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (no look-ahead: a curve over time)."""
    cumulative = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def plot_score_by_robot_hours(rows: list[EpisodeLogRow], path: Path) -> None:
    """Per-episode step-wise score against the fleet's robot-hours, coloured by the driving version."""
    plt = _plt()
    rows = sorted(rows, key=lambda r: r.received_at)
    hours = robot_hours(rows)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    versions = sorted({r.policy_version for r in rows})
    cmap = plt.get_cmap("viridis", max(2, len(versions)))
    for i, version in enumerate(versions):
        picked = [j for j, r in enumerate(rows) if r.policy_version == version]
        ax.scatter(hours[picked], [rows[j].score for j in picked], s=14, color=cmap(i), label=f"v{version}")
    for task in sorted({r.task for r in rows}):
        picked = [j for j, r in enumerate(rows) if r.task == task]
        window = max(1, len(picked) // 4)
        ax.plot(hours[picked], moving_mean([rows[j].score for j in picked], window), label=f"{task} (mean of {window})")
    ax.set_xlabel("robot-hours of online data")
    ax.set_ylabel("step-wise score")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_interventions(rows: list[EpisodeLogRow], path: Path) -> None:
    plt = _plt()
    rows = sorted(rows, key=lambda r: r.received_at)
    hours = robot_hours(rows)
    rate = [r.human_steps / max(r.steps, 1) for r in rows]
    window = max(1, len(rate) // 8)
    smooth = moving_mean(rate, window)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot(hours, rate, ".", alpha=0.4, label="per episode")
    ax.plot(hours, smooth, label=f"moving mean ({window})")
    ax.set_xlabel("robot-hours of online data")
    ax.set_ylabel("fraction of steps under human control")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(rows: list[EpisodeLogRow], published: list[dict], swaps: list[dict], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].hist([r.ingest_latency_s for r in rows], bins=20)
    axes[0].set_xlabel("episode committed on robot -> in a snapshot [s]")
    axes[1].hist([p["build_publish_s"] for p in published], bins=10)
    axes[1].set_xlabel("export + sign + publish [s]")
    axes[2].hist([x["publish_to_active_s"] for x in swaps], bins=10)
    axes[2].set_xlabel("published -> active on a robot [s]\n(includes the wait for the episode boundary)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, progress: LearnerProgress, extra: dict[str, Any], value_traces: dict | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = progress.episodes
    figures = {}
    if rows:
        plot_score_by_version(rows, out / "score_by_version.png")
        plot_score_by_robot_hours(rows, out / "score_by_robot_hours.png")
        plot_interventions(rows, out / "interventions.png")
        plot_latency(rows, progress.published, progress.swaps, out / "latency.png")
        figures = {
            "score per task vs policy version": "score_by_version.png",
            "score vs robot-hours": "score_by_robot_hours.png",
            "intervention rate over robot-hours": "interventions.png",
            "latency histograms": "latency.png",
        }
    if value_traces:
        from lwd_learner.bench_learning import _plot_values

        _plot_values(value_traces, out / "value_over_time.png")
        figures["value over time, a success and a failure (Fig. 6)"] = "value_over_time.png"
    lat = [r.ingest_latency_s for r in rows]
    robot_hours = sum(r.steps for r in rows) / CONTROL_RATE_HZ / 3600
    swap = [x["publish_to_active_s"] for x in progress.swaps]
    lines = [
        "# LWD flywheel run",
        "",
        f"- robots: {extra.get('robots')}, tasks: {', '.join(extra.get('tasks', []))}",
        f"- wall time: {extra.get('seconds', 0):.0f} s; policies published: {len(progress.published)}; "
        f"online episodes ingested: {len(rows)}; robot-hours: {robot_hours:.3f}",
        f"- episode committed on a robot -> in a committed snapshot: p50 {percentile(lat, 50):.1f} s, "
        f"p99 {percentile(lat, 99):.1f} s",
        f"- episodes that failed to load (quarantined/corrupt/missing): {progress.quarantined_loads}",
        f"- policy published -> active on a robot (swapped at an episode boundary): "
        f"p50 {percentile(swap, 50):.1f} s, p99 {percentile(swap, 99):.1f} s (n={len(swap)}); "
        f"active at the end: {dict(sorted(progress.active.items()))}",
        f"- episodes in which the policy's version changed (a swap that did not wait for the boundary): "
        f"{sum(len(r.policy_versions) > 1 for r in rows)} of {len(rows)}",
        "",
        "## Score by task and policy version",
        "",
        "| task | version | episodes | success | step-wise score |",
        "|---|---|---|---|---|",
    ]
    for (task, version), (n, success, score) in scores_by_task_version(rows).items():
        lines.append(f"| {task} | v{version} | {n} | {success:.2f} | {score:.2f} |")
    interv = [r.human_steps / max(r.steps, 1) for r in rows]
    lines += [
        "",
        f"Mean fraction of steps under human control: {statistics.fmean(interv):.2f}"
        if interv
        else "No online episodes.",
        "",
        "Version 0 episodes ran before the first policy reached the robot: the virtual teleoperator",
        "drove them. A small CPU run is a smoke test of the loop, not a learning result: see",
        "learner/bench/results/learning/ for the benchmark tables.",
        "",
        "## Figures",
        "",
    ]
    lines += [f"### {title}\n\n![{title}]({name})\n" for title, name in figures.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    data = {
        "episodes": [dataclasses.asdict(r) for r in rows],
        "published": progress.published,
        "active": progress.active,
        "swaps": progress.swaps,
        "stage_logs": progress.stage_logs,
        **extra,
    }
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str))
    return out / "report.md"
