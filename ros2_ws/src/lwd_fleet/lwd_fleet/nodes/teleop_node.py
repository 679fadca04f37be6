"""teleop: gamepad takeover for one robot (`ros2 run lwd_fleet teleop`).

Reads the pad itself through pygame/SDL, headless (``joystick_source: pygame``; it then also
publishes ``joy`` as sensor_msgs/Joy in the ROS 2 ``game_controller_node`` convention), or
consumes ``joy`` from a standard ROS joy node (``joystick_source: topic``). Either way the same
mapping (``lwd_fleet.teleop.mapping``, every index a parameter) turns the pad into:

* ``teleop/joint_target`` (sensor_msgs/JointState), at ``rate_hz`` while a deadman is held:
  ``name`` = the selected arm's joints of the active group + its gripper, ``velocity`` = rad/s
  (gripper m/s). The controller suspends the policy and integrates these from the pose it is
  commanding (bumpless). Letting go publishes one empty JointState: the explicit release, after
  which the policy replans from the current state. If the pad or the Joy stream is lost while a
  deadman is held, nothing is published and the controller holds the arms (never hands back).
* ``episode/event`` (lwd_msgs/EpisodeEvent) ``event=ENDED`` with ``outcome`` SUCCESS / FAILURE /
  ABORTED on START+A / START+B / START+X: the operator's verdict, filled with the episode id, task
  and instruction of the last STARTED event seen. The recorder closes the episode with it; the
  controller treats it as an episode boundary (policy swaps happen there).

A scripted "human" (e.g. the sim's ScriptedExpert) skips this node and publishes absolute
``position`` targets on ``teleop/joint_target`` directly (see ``lwd_fleet.control.loop``).
"""

from __future__ import annotations

import math
import time
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState, Joy

from lwd_fleet.control.topics import TELEOP_JOINT_TARGET
from lwd_fleet.nodes.spin import run_node
from lwd_fleet.teleop.mapping import JoyMapping, TeleopMapper
from lwd_msgs.msg import EpisodeEvent
from lwd_protocol.names import RosTopics

_DEFAULT = JoyMapping()
PARAMETERS: dict[str, tuple[Any, str]] = {
    "robot_id": ("", "robot id put into EpisodeEvent outcome marks"),
    "joystick_source": ("pygame", "'pygame': read the pad here and publish joy; 'topic': consume joy"),
    "joystick_index": (0, "SDL device index of the pad (pygame source)"),
    "rate_hz": (30.0, "pad polling / command publishing rate"),
    "joy_timeout_s": (0.5, "a Joy stream older than this counts as lost (topic source)"),
    "deadman_left_button": (_DEFAULT.deadman_left, "hold to drive the left arm (LB)"),
    "deadman_right_button": (_DEFAULT.deadman_right, "hold to drive the right arm (RB)"),
    "stick_axes": (list(_DEFAULT.stick_axes), "axes driving joints A..D of the active group"),
    "stick_signs": (list(_DEFAULT.stick_signs), "sign per stick axis"),
    "proximal_joints": (list(_DEFAULT.joint_groups[0]), "joint group 0 (arm joint names without side)"),
    "distal_joints": (list(_DEFAULT.joint_groups[1]), "joint group 1"),
    "group_button": (_DEFAULT.group_button, "toggles the joint group (Y)"),
    "gripper_close_axis": (_DEFAULT.gripper_close_axis, "trigger closing the gripper (LT)"),
    "gripper_open_axis": (_DEFAULT.gripper_open_axis, "trigger opening the gripper (RT)"),
    "outcome_modifier_button": (_DEFAULT.outcome_modifier, "hold for outcome chords (START)"),
    "success_button": (_DEFAULT.success_button, "modifier + this = SUCCESS (A)"),
    "failure_button": (_DEFAULT.failure_button, "modifier + this = FAILURE (B)"),
    "abort_button": (_DEFAULT.abort_button, "modifier + this = ABORTED (X)"),
    "deadzone": (_DEFAULT.deadzone, "stick deadzone (fraction of full deflection)"),
    "joint_speed": (_DEFAULT.joint_speed, "joint speed at full deflection [rad/s]"),
    "gripper_speed": (_DEFAULT.gripper_speed, "gripper speed at a full trigger [m/s]"),
}


class TeleopNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("teleop", **kwargs)
        from rcl_interfaces.msg import ParameterDescriptor

        for name, (default, text) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=text))

        def p(name: str) -> Any:
            return self.get_parameter(name).value

        self.mapping = JoyMapping(
            deadman_left=int(p("deadman_left_button")),
            deadman_right=int(p("deadman_right_button")),
            stick_axes=tuple(int(a) for a in p("stick_axes")),
            stick_signs=tuple(float(s) for s in p("stick_signs")),
            joint_groups=(tuple(p("proximal_joints")), tuple(p("distal_joints"))),
            group_button=int(p("group_button")),
            gripper_close_axis=int(p("gripper_close_axis")),
            gripper_open_axis=int(p("gripper_open_axis")),
            outcome_modifier=int(p("outcome_modifier_button")),
            success_button=int(p("success_button")),
            failure_button=int(p("failure_button")),
            abort_button=int(p("abort_button")),
            deadzone=float(p("deadzone")),
            joint_speed=float(p("joint_speed")),
            gripper_speed=float(p("gripper_speed")),
        )
        self.mapper = TeleopMapper(self.mapping)
        self.robot_id = str(p("robot_id"))
        self.source = str(p("joystick_source"))
        if self.source not in ("pygame", "topic"):
            raise ValueError(f"joystick_source must be 'pygame' or 'topic', got {self.source!r}")
        rate = float(p("rate_hz"))
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate_hz must be > 0, got {rate}")
        self.joy_timeout = float(p("joy_timeout_s"))
        self._episode: EpisodeEvent | None = None
        self._joy: tuple[list[float], list[int], float] | None = None  # axes, buttons, receipt time
        self._lost_logged = False

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.target_pub = self.create_publisher(JointState, TELEOP_JOINT_TARGET, reliable)
        self.event_pub = self.create_publisher(
            EpisodeEvent, RosTopics.EPISODE_EVENT, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.create_subscription(
            EpisodeEvent,
            RosTopics.EPISODE_EVENT,
            self._on_episode_event,
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.gamepad = None
        self.joy_pub = None
        if self.source == "pygame":
            from lwd_fleet.teleop.gamepad import PygameGamepad

            self.gamepad = PygameGamepad(int(p("joystick_index")))
            self.joy_pub = self.create_publisher(Joy, RosTopics.JOY, reliable)  # like joy_node: any QoS can read it
        else:
            self.create_subscription(Joy, RosTopics.JOY, self._on_joy, qos_profile_sensor_data)
        self.timer = self.create_timer(1.0 / rate, self._on_tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"teleop: {self.source} pad at {rate:g} Hz -> {TELEOP_JOINT_TARGET}")

    def _on_joy(self, msg: Joy) -> None:
        self._joy = (list(msg.axes), list(msg.buttons), time.monotonic())

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.STARTED:
            self._episode = msg

    def _read_pad(self) -> tuple[list[float], list[int]] | None:
        if self.gamepad is not None:
            state = self.gamepad.read()
            for event in self.gamepad.events:
                self.get_logger().info(event)
            self.gamepad.events.clear()
            if state is None:
                return None
            joy = Joy(axes=state.axes, buttons=state.buttons)
            joy.header.stamp = self.get_clock().now().to_msg()
            joy.header.frame_id = "joy"
            assert self.joy_pub is not None
            self.joy_pub.publish(joy)
            return state.axes, state.buttons
        if self._joy is None or time.monotonic() - self._joy[2] > self.joy_timeout:
            return None
        return self._joy[0], self._joy[1]

    def _on_tick(self) -> None:
        pad = self._read_pad()
        if pad is None:
            if self.mapper.engaged_arms and not self._lost_logged:
                self.get_logger().error("gamepad lost while a deadman was held: the controller holds the arms")
                self._lost_logged = True
            return  # keep the mapper's state: a pad that returns with the deadman up sends the release
        self._lost_logged = False
        out = self.mapper.update(*pad)
        stamp = self.get_clock().now().to_msg()
        if out.arms:
            cmd = JointState(name=list(out.names), velocity=out.velocity.tolist())
            cmd.header.stamp = stamp
            self.target_pub.publish(cmd)
        elif out.release:
            release = JointState()
            release.header.stamp = stamp
            self.target_pub.publish(release)
            self.get_logger().info("deadman released: control goes back to the policy")
        if out.outcome is not None:
            self._publish_outcome(out.outcome)

    def _publish_outcome(self, outcome: int) -> None:
        ep = self._episode
        msg = EpisodeEvent(event=EpisodeEvent.ENDED, outcome=outcome, robot_id=self.robot_id)
        if ep is not None:
            msg.episode_id, msg.task, msg.instruction = ep.episode_id, ep.task, ep.instruction
        msg.header.stamp = self.get_clock().now().to_msg()
        self.event_pub.publish(msg)
        names = {
            EpisodeEvent.OUTCOME_SUCCESS: "SUCCESS",
            EpisodeEvent.OUTCOME_FAILURE: "FAILURE",
            EpisodeEvent.OUTCOME_ABORTED: "ABORTED",
        }
        self.get_logger().info(f"operator marked episode {msg.episode_id or '(current)'} {names.get(outcome, outcome)}")

    def close(self) -> None:
        if self.gamepad is not None:
            self.gamepad.close()


def main(args: list[str] | None = None) -> None:
    run_node(TeleopNode, lambda node: node.close(), args)


if __name__ == "__main__":
    main()
