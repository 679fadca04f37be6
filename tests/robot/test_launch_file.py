"""robot.launch.py is a standard ROS 2 Python launch file and its parameter YAML matches the nodes.

`launch`/`launch_ros` are not installable from PyPI, so the file is checked by parsing; on a
robot with ROS 2 from apt it is run by `ros2 launch` (docker/robot.Dockerfile)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "robot.launch.py"
PARAMS = REPO / "ros2_ws/src/lwd_fleet/config/robot.yaml"


def _node_executables() -> set[str]:
    tree = ast.parse(LAUNCH.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node":
            for kw in node.keywords:
                if kw.arg == "executable":
                    found.add(kw.value.value)
    return found


def test_launch_file_defines_generate_launch_description():
    tree = ast.parse(LAUNCH.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_every_launched_executable_is_a_console_script():
    setup = (REPO / "ros2_ws/src/lwd_fleet/setup.py").read_text()
    for exe in _node_executables():
        assert f'"{exe} = ' in setup, f"launch starts {exe!r} but lwd_fleet/setup.py has no such console script"


def test_params_declared_by_nodes_exist_in_yaml(ros_env):
    params = yaml.safe_load(PARAMS.read_text())
    assert "sim_driver" in params
    code = (
        "import rclpy\nfrom lwd_fleet.drivers.sim_driver import SimDriverNode\n"
        "rclpy.init()\nn = SimDriverNode()\nprint(' '.join(sorted(n._parameters)))\n"
        "n.destroy_node()\nrclpy.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ros_env)
    assert out.returncode == 0, out.stderr
    declared = set(out.stdout.split()) - {"use_sim_time", "start_type_description_service"}
    assert declared == set(params["sim_driver"]["ros__parameters"])
