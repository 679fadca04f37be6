"""The flywheel report's numbers and files, from hand-built episode rows (no services needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from lwd_learner.flywheel.learner_loop import EpisodeLogRow, LearnerProgress
from lwd_learner.flywheel.report import moving_mean, robot_hours, write_report


def row(i: int, version: int, score: float, steps: int = 900, versions: list[int] | None = None) -> EpisodeLogRow:
    return EpisodeLogRow(
        robot=f"robot_{i % 2 + 1:02d}",
        task="restocking",
        outcome="success" if score == 1.0 else "failure",
        score=score,
        success=score == 1.0,
        policy_version=version,
        policy_versions=[version] if versions is None else versions,
        steps=steps,
        human_steps=steps // 3,
        ingest_latency_s=0.5 + i,
        snapshot=i + 1,
        received_at=1000.0 + i,
    )


def test_moving_mean_is_a_trailing_window_mean():
    values = [1.0, 0.0, 0.0, 1.0, 1.0]
    expected = [np.mean(values[max(0, k - 2) : k + 1]) for k in range(len(values))]  # window 3
    np.testing.assert_allclose(moving_mean(values, 3), expected)
    np.testing.assert_allclose(moving_mean(values, 1), values)


def test_robot_hours_accumulate_control_steps_at_30_hz():
    rows = [row(0, 0, 0.0, steps=1800), row(1, 1, 1.0, steps=900)]
    np.testing.assert_allclose(robot_hours(rows), [60 / 3600, 90 / 3600])


def test_report_counts_mid_episode_swaps_and_writes_every_figure(tmp_path):
    progress = LearnerProgress(
        published=[{"version": 1, "snapshot": 0, "at": 0.0, "build_publish_s": 2.0}],
        episodes=[row(0, 0, 0.0, versions=[]), row(1, 1, 1.0), row(2, 1, 0.5, versions=[1, 2])],
        active={"robot_01": 1, "robot_02": 1},
        swaps=[{"robot": "robot_01", "version": 1, "publish_to_active_s": 12.0}],
    )
    md = write_report(tmp_path, progress, {"robots": 2, "tasks": ["restocking"], "seconds": 10.0}, None)
    text = md.read_text()
    assert "did not wait for the boundary): 1 of 3" in text
    for name in ("score_by_version.png", "score_by_robot_hours.png", "interventions.png", "latency.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
        assert f"]({name})" in text
    data = json.loads((tmp_path / "report.json").read_text())
    assert [e["policy_versions"] for e in data["episodes"]] == [[], [1], [1, 2]]


def test_live_view_shows_stage_losses_swaps_and_scores():
    from types import SimpleNamespace

    from rich.console import Console

    from lwd_learner.flywheel.progress import render

    progress = LearnerProgress(
        stage="SFT",
        step=150,
        total=300,
        metrics={"fm_loss": 0.125, "step": 150.0},
        version=1,
        episodes=[row(0, 1, 1.0)],
        active={"robot_01": 1},
        swaps=[{"robot": "robot_01", "version": 1, "publish_to_active_s": 12.0}],
    )
    fleet = SimpleNamespace(ids=["robot_01"], alive=lambda: {"robot_01": True}, pending_uploads=lambda: {"robot_01": 2})
    console = Console(record=True, width=200)
    console.print(render(progress, SimpleNamespace(coordinator=None), fleet, started=0.0))
    text = console.export_text()
    assert "stage: SFT" in text and "step 150/300" in text and "fm_loss=0.125" in text
    assert "published -> active (at an episode boundary): p50 12.0 s (n=1)" in text and "robot_01:v1" in text
    assert "restocking" in text and "v1" in text
