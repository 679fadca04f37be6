"""Shared by the flywheel end-to-end tests: how they start `lwd flywheel --quick`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture
def quick_flywheel(tmp_path, ros_env) -> tuple[Path, list[str], dict[str, str]]:
    """(workdir, argv, env) of a quick flywheel run in this test's temp dir, plain log lines."""
    workdir = tmp_path / "flywheel"
    env = dict(ros_env, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    argv = [sys.executable, "-m", "lwd_learner.cli", "flywheel", "--quick", "--no-live", "--workdir", str(workdir)]
    return workdir, argv, env
