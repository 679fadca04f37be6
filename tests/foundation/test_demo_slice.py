"""`make demo` runs a real slice: every episode a robot records ends up in a committed snapshot."""

from __future__ import annotations

from lwd_learner.demo import DemoConfig, run


def test_demo_slice_commits_every_episode(tmp_path):
    summary = run(
        DemoConfig(
            robots=2,
            episodes_per_robot=2,
            steps_per_episode=12,
            image_size=16,
            sim_images=False,
            sim_max_steps=60,
            workdir=tmp_path,
        )
    )
    assert summary["episodes"] == 4
    assert summary["snapshot_version"] >= 1
    assert summary["quarantined"] == 0
    assert summary["spool_leftovers"] == 0
