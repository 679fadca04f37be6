"""lwd_sim: the simulated LWD fleet robot (MuJoCo), its eight tasks, scripted experts and data generator.

Pure Python, no rclpy: `from lwd_sim import make_env`.
"""

from __future__ import annotations

import os

# Headless GL must be chosen before mujoco is imported; EGL unless the caller chose (e.g. osmesa).
os.environ.setdefault("MUJOCO_GL", "egl")

from lwd_sim.env import STATE_DIM, STATE_LAYOUT, EnvConfig, LwdSimEnv, make_env
from lwd_sim.experts import ExpertConfig, ScriptedExpert

__all__ = ["STATE_DIM", "STATE_LAYOUT", "EnvConfig", "ExpertConfig", "LwdSimEnv", "ScriptedExpert", "make_env"]
