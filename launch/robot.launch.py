"""Bring up one LWD Fleet robot: `ros2 launch lwd_fleet robot.launch.py params_file:=robot.yaml`.

Starts the robot's nodes, every one reading its parameters from ONE YAML file (see
config/robot.yaml; node sections are keyed `/**/<node>` so they also apply under a namespace):

    sim_driver   MuJoCo sim driver (only with driver:=sim; a hardware driver is its own package
                 publishing the same topics)
    cameras      camera capture (V4L2) or, in sim, the compressed streams + status
    controller   30 Hz chunked policy control with safety filter and watchdog
    teleop       gamepad takeover, episode outcome buttons
    recorder     one MCAP episode per episode into the spool
    uplink       spool -> object store + MQTT announcement (respawned if it dies)
    policy_sync  policy download, verification and staging for hot swap (respawned if it dies)

uplink and policy_sync are stateless bridges (their work waits in the spool / policy cache), so
they are restarted `BRIDGE_RESPAWN_DELAY_S` after they die; the driver, controller and recorder
are not (a dead control loop needs a person, not a silent restart).

Machines without `ros2 launch` (pip-only installs) run the same set with
`lwd-robot --params robot.yaml [--namespace ns] [--driver sim|none]` (lwd_fleet.bringup); a test
checks that both start the same executables, names and parameter file.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import LaunchConfigurationEquals
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

BRIDGE_RESPAWN_DELAY_S = 2.0  # = lwd_fleet.bringup.BRIDGE_RESPAWN_DELAY_S (a test checks)


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("lwd_fleet"), "config", "robot.yaml")
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")

    def robot_node(executable: str, **kwargs) -> Node:
        return Node(
            package="lwd_fleet",
            executable=executable,
            name=executable,
            namespace=namespace,
            parameters=[params_file],
            output="screen",
            **kwargs,
        )

    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="robot parameter YAML"),
            DeclareLaunchArgument("namespace", default_value="", description="ROS namespace of this robot"),
            DeclareLaunchArgument(
                "driver", default_value="sim", description="'sim' or 'none' (a hardware driver runs separately)"
            ),
            robot_node("sim_driver", condition=LaunchConfigurationEquals("driver", "sim")),
            robot_node("cameras"),
            robot_node("controller"),
            robot_node("teleop"),
            robot_node("recorder"),
            robot_node("uplink", respawn=True, respawn_delay=BRIDGE_RESPAWN_DELAY_S),
            robot_node("policy_sync", respawn=True, respawn_delay=BRIDGE_RESPAWN_DELAY_S),
        ]
    )
