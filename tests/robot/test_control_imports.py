"""The control core stays importable without ROS, jax or GPU libraries (the ROS nodes wrap it)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("jax", "rclpy", "tensorrt", "torch", "onnxruntime", "cv2")


def test_core_modules_import_no_heavy_or_ros_dependencies() -> None:
    code = (
        "import sys\n"
        "import lwd_fleet.control, lwd_fleet.inference, lwd_fleet.imaging\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "", f"imported at module load: {out.stdout.strip()}"
