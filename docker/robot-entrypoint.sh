#!/usr/bin/env bash
# Source ROS and the workspace, then run the given command (default: the robot launch file).
set -e
source /opt/ros/kilted/setup.bash
source /opt/lwd/ros2_ws/install/setup.bash
exec "$@"
