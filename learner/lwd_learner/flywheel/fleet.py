"""A simulated fleet of ROS 2 robots, each brought up exactly as a technician would: `lwd-robot --params`.

Every robot gets its own parameter YAML (the package's config/robot.yaml with this robot's id,
spool, credentials and sim settings), its own ROS_DOMAIN_ID (robots are separate machines; their
/clock topics must never meet) and its own ROS_HOME. The sim driver's virtual teleoperator plays
the human who takes over stalled robots; the recorder runs episodes back to back, resetting the
scene through the driver, which rotates over the fleet's tasks.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lwd_learner.flywheel.stack import CloudStack
from lwd_learner.localstack.ros_env import ros_isolated_env


@dataclass(frozen=True)
class FleetConfig:
    robots: int = 4
    tasks: tuple[str, ...] = ("restocking", "gongfu_tea")
    image_size: int = 64
    camera_every_n: int = 3  # 10 Hz cameras: enough for the record, cheap for 2 CPU cores
    record_images: bool = True
    realtime_factor: float = 1.0
    # recorder cap, then outcome timeout; None = the longest of the fleet's tasks' own time limits
    # (90 s for the long-horizon ones: the scripted expert alone needs ~57 s for gongfu_tea)
    max_episode_steps: int | None = None
    takeover_stall_s: float = 5.0
    takeover_watch_probability: float = 0.8
    domain_base: int = 0  # robots use domain_base + index; 0 = pick a free-looking range per run


def episode_step_cap(cfg: FleetConfig) -> int:
    if cfg.max_episode_steps is not None:
        return cfg.max_episode_steps
    from lwd_sim.tasks import make_task

    return max(make_task(task).max_steps for task in cfg.tasks)


def robot_ids(count: int) -> list[str]:
    return [f"robot_{i + 1:02d}" for i in range(count)]


def default_robot_params() -> dict[str, Any]:
    """The package's config/robot.yaml (source tree or the installed ament share)."""
    import lwd_fleet

    candidates = [Path(lwd_fleet.__file__).resolve().parent.parent / "config" / "robot.yaml"]
    candidates.append(Path(sys.prefix) / "share" / "lwd_fleet" / "config" / "robot.yaml")
    for path in candidates:
        if path.is_file():
            return yaml.safe_load(path.read_text())
    raise FileNotFoundError(f"lwd_fleet config/robot.yaml not found (looked at {[str(c) for c in candidates]})")


def robot_params(base: dict[str, Any], robot: str, index: int, cfg: FleetConfig, stack: CloudStack, root: Path) -> dict:
    """This robot's parameter file: the technician's template with the site-specific values filled in."""
    params = copy.deepcopy(base)
    creds = stack.credentials[robot]
    common = params["/**"]["ros__parameters"]
    common.update(
        robot_id=robot,
        use_sim_time=True,
        spool_dir=str(root / "spool"),
        policy_cache_dir=str(root / "policies"),
        max_spool_bytes=4 * 1024**3,
        mqtt_host=stack.broker.host,
        mqtt_port=stack.broker.port,
        mqtt_username=robot,
        mqtt_password_file=str(creds.mqtt_password_file),
        s3_endpoint=stack.store.endpoint,
        s3_access_key=creds.s3_access_key,
        s3_secret_key_file=str(creds.s3_secret_key_file),
    )

    def node(name: str) -> dict[str, Any]:
        return params[f"/**/{name}"]["ros__parameters"]

    node("sim_driver").update(
        task=cfg.tasks[index % len(cfg.tasks)],
        seed=1000 + index,
        render_cameras=cfg.record_images,
        image_size=cfg.image_size,
        camera_every_n=cfg.camera_every_n,
        realtime_factor=cfg.realtime_factor,
        task_rotation=",".join(cfg.tasks[index % len(cfg.tasks) :] + cfg.tasks[: index % len(cfg.tasks)]),
        virtual_teleop=True,
        takeover_stall_s=cfg.takeover_stall_s,
        takeover_watch_probability=cfg.takeover_watch_probability,
    )
    node("cameras").update(backend="sim")
    node("teleop").update(joystick_source="topic")  # no pad on a sim robot; the virtual teleoperator drives
    node("recorder").update(
        task="",
        max_episode_steps=episode_step_cap(cfg),
        record_images=cfg.record_images,
        wait_for_cameras_s=5.0 if cfg.record_images else 0.0,
    )
    node("controller").update(camera_max_age_s=1.0 if cfg.record_images else 0.2)
    node("policy_sync").update(trusted_keys=str(stack.trusted_keys_file), backend="onnxruntime-cpu")
    return params


class RosFleet:
    """Start/stop N robots (one `lwd-robot` process tree each); everything is stopped by PID."""

    def __init__(self, cfg: FleetConfig, stack: CloudStack, workdir: Path) -> None:
        self.cfg = cfg
        self.stack = stack
        self.workdir = Path(workdir)
        self.ids = robot_ids(cfg.robots)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def robot_dir(self, robot: str) -> Path:
        return self.workdir / "robots" / robot

    def start(self) -> RosFleet:
        base = default_robot_params()
        domain_base = self.cfg.domain_base or random.randint(1, 101 - self.cfg.robots)
        if not 1 <= domain_base <= 101 - self.cfg.robots:
            raise ValueError(f"domain_base {domain_base} leaves no room for {self.cfg.robots} robots in 1..101")
        exe = Path(sys.executable).parent / "lwd-robot"
        for i, robot in enumerate(self.ids):
            root = self.robot_dir(robot)
            for sub in ("spool", "policies", "ros_home"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            params_file = root / "robot.yaml"
            params_file.write_text(yaml.safe_dump(robot_params(base, robot, i, self.cfg, self.stack, root)))
            env = ros_isolated_env(root / "ros_home", domain_base + i)
            env.setdefault("MUJOCO_GL", "egl")
            env["SDL_VIDEODRIVER"] = "dummy"
            env["OMP_NUM_THREADS"] = "1"
            self.logs[robot] = root / "robot.log"
            with open(self.logs[robot], "wb") as log:
                self.procs[robot] = subprocess.Popen(
                    [str(exe), "--params", str(params_file), "--driver", "sim"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        return self

    def alive(self) -> dict[str, bool]:
        return {r: p.poll() is None for r, p in self.procs.items()}

    def pending_uploads(self) -> dict[str, int]:
        return {r: len(list((self.robot_dir(r) / "spool").glob("*.mcap"))) for r in self.ids}

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGINT each bring-up (it stops its seven nodes), then SIGKILL whatever is left of the group."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=5)
