"""Shared setup for the sim tests: a headless GL backend chosen before mujoco is imported, and a
session cache of scripted-expert rollouts (see sim_rollouts.py)."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # EGL (Mesa llvmpipe) works here; osmesa is the fallback

import pytest
from sim_rollouts import RolloutCache


def pytest_configure(config: pytest.Config) -> None:
    try:
        import mujoco

        mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8).close()
    except Exception:  # EGL unusable on this host: fall back to OSMesa for every later import
        os.environ["MUJOCO_GL"] = "osmesa"


@pytest.fixture(scope="session")
def rollouts() -> RolloutCache:
    return RolloutCache()
