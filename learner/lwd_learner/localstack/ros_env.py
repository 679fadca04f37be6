"""Environment for an rclpy process that must stay on this machine and away from other runs.

ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST keeps Fast DDS discovery off the network (multicast
out of the machine is forbidden here); a per-run ROS_DOMAIN_ID separates parallel test runs;
ROS_HOME/ROS_LOG_DIR in a temp dir keep rclpy's logs out of $HOME.
"""

from __future__ import annotations

import os
import random
from pathlib import Path


def pick_domain_id(seed: int | None = None) -> int:
    """A domain id in 1..101 (0 is everyone's default; >101 collides with ephemeral ports)."""
    rng = random.Random(seed if seed is not None else os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    return rng.randint(1, 101)


def ros_isolated_env(ros_home: Path, domain_id: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) with the isolation variables set."""
    env = dict(os.environ if base is None else base)
    ros_home = Path(ros_home)
    (ros_home / "log").mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "ROS_DOMAIN_ID": str(domain_id),
            "ROS_HOME": str(ros_home),
            "ROS_LOG_DIR": str(ros_home / "log"),
            "RMW_IMPLEMENTATION": env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; the discovery range above replaces it
    return env


def apply_to_current_process(ros_home: Path, domain_id: int) -> None:
    """Set the isolation variables in os.environ (call before rclpy.init in this process)."""
    os.environ.update(
        {k: v for k, v in ros_isolated_env(ros_home, domain_id).items() if k.startswith(("ROS_", "RMW_"))}
    )
