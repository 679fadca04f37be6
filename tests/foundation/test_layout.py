"""The three rooms stay apart: robot code never imports jax, cloud code never imports rclpy,
and the protocol package imports neither."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(' '.join(sorted(k.split('.')[0] for k in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def _package_modules(package_dir: Path, package: str) -> list[str]:
    mods = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts[0] == package and "__main__" not in parts:
            mods.append(".".join(parts))
    return mods


def test_protocol_imports_neither_rclpy_nor_jax():
    mods = _package_modules(REPO / "ros2_ws/src/lwd_protocol/lwd_protocol", "lwd_protocol")
    loaded = _imported_after(mods)
    assert not {"rclpy", "jax", "flax"} & loaded


def test_learner_never_imports_rclpy():
    mods = _package_modules(REPO / "learner/lwd_learner", "lwd_learner")
    loaded = _imported_after(mods)
    assert "rclpy" not in loaded and "lwd_msgs" not in loaded


def test_robot_side_never_imports_jax():
    mods = _package_modules(REPO / "ros2_ws/src/lwd_fleet/lwd_fleet", "lwd_fleet")
    if not mods:
        pytest.skip("no robot modules yet")
    loaded = _imported_after(mods)
    assert not {"jax", "flax", "optax"} & loaded
