"""ROS names the control nodes add on top of ``lwd_protocol.names.RosTopics``.

Each is read from RosTopics first, so once the protocol package defines it there this module
simply follows; the literal is the fallback until then (one place, never re-spelled elsewhere).
"""

from __future__ import annotations

from lwd_protocol.names import RosTopics

# sensor_msgs/JointState, teleop (joystick mapping or a scripted "human") -> controller.
# name = driven joints (per-arm selection), position = absolute targets OR velocity = rad/s deltas;
# an empty message releases the takeover. See lwd_fleet.control.loop.
TELEOP_JOINT_TARGET: str = getattr(RosTopics, "TELEOP_JOINT_TARGET", "teleop/joint_target")

# std_srvs/Trigger service on the controller: the explicit release of a latched e-stop.
RELEASE_ESTOP: str = getattr(RosTopics, "RELEASE_ESTOP", "controller/release_estop")
