"""ROS names the control nodes use beyond the basics, re-exported from ``lwd_protocol.names.RosTopics``."""

from __future__ import annotations

from lwd_protocol.names import RosTopics

# sensor_msgs/JointState, teleop (joystick mapping or a scripted "human") -> controller.
# name = driven joints (per-arm selection), position = absolute targets OR velocity = rad/s deltas;
# an empty message releases the takeover. See lwd_fleet.control.loop.
TELEOP_JOINT_TARGET: str = RosTopics.TELEOP_JOINT_TARGET

# std_srvs/Trigger service on the controller: the explicit release of a latched e-stop.
RELEASE_ESTOP: str = RosTopics.RELEASE_ESTOP
