"""Bring up one LWD Fleet robot: `ros2 launch lwd_fleet robot.launch.py params_file:=robot.yaml`.

All nodes read their parameters from ONE YAML file (see config/robot.yaml). Today this starts the
robot driver (the MuJoCo sim driver when `driver:=sim`; a hardware driver is a separate package
exposing the same topics). The controller, cameras, teleop, recorder, uplink and policy-sync
nodes join this file as they land (robot-side issue).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import LaunchConfigurationEquals
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("lwd_fleet"), "config", "robot.yaml")
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="robot parameter YAML"),
            DeclareLaunchArgument("namespace", default_value="", description="ROS namespace of this robot"),
            DeclareLaunchArgument(
                "driver", default_value="sim", description="'sim' or 'none' (a hardware driver runs separately)"
            ),
            Node(
                package="lwd_fleet",
                executable="sim_driver",
                name="sim_driver",
                namespace=namespace,
                parameters=[params_file],
                output="screen",
                condition=LaunchConfigurationEquals("driver", "sim"),
            ),
        ]
    )
