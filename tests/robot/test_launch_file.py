"""robot.launch.py and `lwd-robot` start the same nodes with the same parameter file, and
config/robot.yaml matches what those nodes declare.

`launch`/`launch_ros` are not installable from PyPI, so the launch file is executed here with
tiny stand-in modules injected into sys.modules (this test only) that record the actions it
builds; on a robot with ROS 2 from apt it is run by `ros2 launch` (docker/robot.Dockerfile).
"""

from __future__ import annotations

import importlib
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from lwd_fleet.bringup import BRIDGE_RESPAWN_DELAY_S, ROBOT_NODES, normalize_namespace, plan

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "robot.launch.py"
PARAMS = REPO / "ros2_ws/src/lwd_fleet/config/robot.yaml"
SHARE = "/opt/ros/share/lwd_fleet"


# ------------------------------------------------------------------ stand-ins for launch / launch_ros
class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(_Recorded):
    pass


class LaunchConfigurationEquals(_Recorded):
    pass


class DeclareLaunchArgument(_Recorded):
    pass


class Node(_Recorded):
    pass


class LaunchDescription(_Recorded):
    pass


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


@pytest.fixture
def launch_description(monkeypatch):
    modules = {
        "launch": _module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": _module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument),
        "launch.conditions": _module("launch.conditions", LaunchConfigurationEquals=LaunchConfigurationEquals),
        "launch.substitutions": _module("launch.substitutions", LaunchConfiguration=LaunchConfiguration),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", Node=Node),
        "ament_index_python": _module("ament_index_python"),
        "ament_index_python.packages": _module(
            "ament_index_python.packages", get_package_share_directory=lambda pkg: f"/opt/ros/share/{pkg}"
        ),
    }
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return runpy.run_path(str(LAUNCH))["generate_launch_description"]()


def _evaluate(desc: LaunchDescription, **overrides: str) -> tuple[dict[str, str], list[tuple]]:
    """What ros2 launch would start: (launch arguments, [(package, executable, name, namespace, params,
    respawn, respawn_delay)]); launch_ros' defaults are respawn=False, respawn_delay=None (= 0 s)."""
    entities = desc.args[0]
    arguments = {
        e.args[0]: overrides.get(e.args[0], e.kwargs["default_value"])
        for e in entities
        if isinstance(e, DeclareLaunchArgument)
    }
    unknown = set(overrides) - set(arguments)
    assert not unknown, f"launch file declares no argument(s) {unknown}"

    def value(v):
        if isinstance(v, LaunchConfiguration):
            return arguments[v.args[0]]
        return v

    started = []
    for e in entities:
        if not isinstance(e, Node):
            continue
        cond = e.kwargs.get("condition")
        if cond is not None:
            assert isinstance(cond, LaunchConfigurationEquals)
            if arguments[cond.args[0]] != cond.args[1]:
                continue
        params = [value(p) for p in e.kwargs["parameters"]]
        started.append(
            (
                e.kwargs["package"],
                e.kwargs["executable"],
                e.kwargs["name"],
                value(e.kwargs["namespace"]),
                params,
                e.kwargs.get("respawn", False),
                float(e.kwargs.get("respawn_delay") or 0.0),
            )
        )
    return arguments, started


@pytest.mark.parametrize(
    ("driver", "namespace"), [("sim", ""), ("none", ""), ("sim", "robot_03"), ("none", "/fleet/robot_07")]
)
def test_launch_file_and_bringup_start_the_same_nodes(launch_description, tmp_path, driver, namespace):
    params = tmp_path / "robot.yaml"
    _, started = _evaluate(launch_description, params_file=str(params), namespace=namespace, driver=driver)
    from_launch = [
        (pkg, exe, name, normalize_namespace(ns), tuple(p), respawn, delay)
        for pkg, exe, name, ns, p, respawn, delay in started
    ]
    from_bringup = [
        ("lwd_fleet", n.executable, n.name, n.namespace, (str(n.params_file),), n.respawn, n.respawn_delay)
        for n in plan(params, namespace, driver)
    ]
    assert from_launch == from_bringup
    assert ("sim_driver" in [s[1] for s in from_launch]) == (driver == "sim")


def test_only_the_stateless_bridges_respawn(launch_description):
    """uplink and policy_sync come back after a crash (launch_ros respawn=True); control nodes never do."""
    _, started = _evaluate(launch_description)
    respawning = {s[2]: s[6] for s in started if s[5] is True}
    assert respawning == {"uplink": BRIDGE_RESPAWN_DELAY_S, "policy_sync": BRIDGE_RESPAWN_DELAY_S}
    assert BRIDGE_RESPAWN_DELAY_S > 0  # a crash loop must not spin the CPU
    assert {n.name: n.respawn_delay for n in ROBOT_NODES if n.respawn} == respawning


def test_launch_defaults_are_the_packaged_yaml_and_the_sim_driver(launch_description):
    arguments, started = _evaluate(launch_description)
    assert arguments == {"params_file": f"{SHARE}/config/robot.yaml", "namespace": "", "driver": "sim"}
    assert [s[2] for s in started] == [n.name for n in ROBOT_NODES]
    setup = (REPO / "ros2_ws/src/lwd_fleet/setup.py").read_text()
    assert '("config/*.yaml")' in setup and '("launch/*.launch.py")' in setup  # installed where the defaults point
    for _, exe, *_ in started:
        assert f'"{exe} = ' in setup, f"launch starts {exe!r} but lwd_fleet/setup.py has no such console script"


def test_bringup_dry_run_prints_the_ros_args_commands(tmp_path):
    params = tmp_path / "robot.yaml"
    params.write_text(PARAMS.read_text())
    out = subprocess.run(
        [sys.executable, "-m", "lwd_fleet.bringup", "--params", str(params), "--namespace", "robot_09", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1] == f"cameras --ros-args -r __node:=cameras -r __ns:=/robot_09 --params-file {params}"
    assert len(lines) == len(ROBOT_NODES)


def test_bringup_refuses_bad_arguments_clearly(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "lwd_fleet.bringup", *args], capture_output=True, text=True)

    out = run("--params", str(tmp_path / "absent.yaml"))
    assert out.returncode == 2 and "absent.yaml does not exist" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("recorder: {spool_dir: /tmp}\n")
    out = run("--params", str(bad))
    assert out.returncode == 2 and "must hold a 'ros__parameters' mapping" in out.stderr
    out = run("--params", str(PARAMS), "--namespace", "9robot")
    assert out.returncode == 2 and "invalid ROS namespace '9robot'" in out.stderr


# ------------------------------------------------------------------ robot.yaml vs the nodes' parameters
NODE_MODULES = {
    "cameras": "lwd_fleet.nodes.camera_node",
    "controller": "lwd_fleet.nodes.controller_node",
    "teleop": "lwd_fleet.nodes.teleop_node",
    "recorder": "lwd_fleet.nodes.recorder_node",
    "uplink": "lwd_fleet.nodes.uplink_node",
    "policy_sync": "lwd_fleet.nodes.policy_sync_node",
}
ROS_BUILTIN = {"use_sim_time", "start_type_description_service"}


def _flatten(params: dict, prefix: str = "") -> set[str]:
    """ROS reads nested YAML maps as dotted names: {head: {device: x}} -> head.device."""
    out = set()
    for key, value in params.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def _sim_driver_declared(env) -> set[str]:
    code = (
        "import rclpy\nfrom lwd_fleet.drivers.sim_driver import SimDriverNode\n"
        "rclpy.init()\nn = SimDriverNode()\nprint(' '.join(sorted(n._parameters)))\n"
        "n.destroy_node()\nrclpy.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split()) - ROS_BUILTIN


def _declared(name: str, ros_env) -> set[str] | None:
    if name == "sim_driver":
        return _sim_driver_declared(ros_env)
    module = importlib.import_module(NODE_MODULES[name])
    params = getattr(module, "PARAMETERS", None)
    if params is None:
        return None  # declares inline: only its YAML section's presence is checked
    return set(params) | set(getattr(module, "DEVICE_PARAMETERS", ()))


def test_robot_yaml_matches_the_parameters_the_nodes_declare(ros_env):
    data = yaml.safe_load(PARAMS.read_text())
    shared = _flatten(data["/**"]["ros__parameters"])
    sections = {key.removeprefix("/**/"): _flatten(v["ros__parameters"]) for key, v in data.items() if key != "/**"}
    assert set(sections) == {n.name for n in ROBOT_NODES}, "robot.yaml needs one /**/<node> section per node"
    used_shared = set()
    for name, keys in sections.items():
        declared = _declared(name, ros_env)
        if declared is None:
            continue
        assert not keys - declared, f"{name}: robot.yaml sets undeclared parameter(s) {sorted(keys - declared)}"
        missing = declared - keys - shared
        assert not missing, f"{name}: parameter(s) {sorted(missing)} are not in robot.yaml"
        used_shared |= declared & shared
    unused = shared - used_shared - ROS_BUILTIN
    assert not unused or "policy_sync" in sections, f"/** parameters no node declares: {sorted(unused)}"
