"""Wire names: ROS 2 topics and services on a robot, and MQTT topics between robot and cloud.

ROS names are relative, so a robot launched under a namespace (e.g. /robot_03) keeps them all
inside it; the sim driver and a hardware driver publish exactly the same names.
MQTT topics carry the protocol major version in their root, so two generations of the fleet
can share a broker without misreading each other.
"""

from __future__ import annotations

import re

from lwd_protocol.robot_spec import CAMERA_NAMES
from lwd_protocol.version import PROTOCOL_VERSION


class RosTopics:
    """Relative ROS 2 names used by the robot-side nodes."""

    JOINT_STATES = "joint_states"  # sensor_msgs/JointState, driver -> all
    JOINT_COMMAND = "joint_command"  # sensor_msgs/JointState (position only), controller -> driver
    ACTION_CHUNK = "policy/action_chunk"  # lwd_msgs/ActionChunk, controller (debug/recording)
    EXECUTED_ACTION = "controller/executed_action"  # lwd_msgs/ExecutedAction, controller -> recorder
    CONTROL_MODE = "controller/mode"  # lwd_msgs/ControlMode
    ESTOP = "estop"  # std_msgs/Bool, latched e-stop input
    JOY = "joy"  # sensor_msgs/Joy
    # sensor_msgs/JointState, teleop (joystick mapping or the sim's virtual teleoperator) -> controller:
    # name = driven joints, position = absolute targets (or velocity = rad/s deltas); empty = release.
    TELEOP_JOINT_TARGET = "teleop/joint_target"
    RELEASE_ESTOP = "controller/release_estop"  # std_srvs/srv/Trigger service: the explicit e-stop release
    EPISODE_EVENT = "episode/event"  # lwd_msgs/EpisodeEvent
    POLICY_STATUS = "policy/status"  # lwd_msgs/PolicyStatus, policy sync -> all (download/validate state, pending)
    ACTIVE_POLICY = "controller/active_policy"  # lwd_msgs/PolicyStatus, controller -> policy sync (what it runs)
    SIM_STATE = "sim/state"  # lwd_msgs/SimState (sim only)
    RESET_EPISODE = "episode/reset"  # lwd_msgs/srv/ResetEpisode (service)
    CAMERA_STATUS = "cameras/status"  # std_msgs/String (JSON), camera node health
    RECORDER_STATUS = "recorder/status"  # std_msgs/String (JSON), recorder state, spool, drops
    UPLINK_STATUS = "uplink/status"  # std_msgs/String (JSON), pending uploads, broker connection

    @staticmethod
    def camera_image(camera: str) -> str:
        """sensor_msgs/Image topic of one camera: cameras/<name>/image_raw."""
        if camera not in CAMERA_NAMES:
            raise ValueError(f"unknown camera {camera!r}; expected one of {CAMERA_NAMES}")
        return f"cameras/{camera}/image_raw"

    @staticmethod
    def camera_compressed(camera: str) -> str:
        """sensor_msgs/CompressedImage topic of one camera (image_transport naming)."""
        return RosTopics.camera_image(camera) + "/compressed"


_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def validate_robot_id(robot_id: str) -> str:
    """Robot ids become MQTT user names, topic levels and key prefixes: keep them plain."""
    if not isinstance(robot_id, str) or not _ID_RE.match(robot_id):
        raise ValueError(f"invalid robot id {robot_id!r}: use 1-63 chars of [a-z0-9_-], starting alphanumeric")
    return robot_id


class MqttTopics:
    """MQTT topic layout (QoS 1 everywhere; policy announcements retained)."""

    ROOT = f"lwd/v{PROTOCOL_VERSION}"
    QOS = 1

    @classmethod
    def episodes(cls, robot_id: str) -> str:
        """Robot -> Coordinator: one JSON EpisodeAnnouncement per uploaded episode."""
        return f"{cls.ROOT}/robots/{validate_robot_id(robot_id)}/episodes"

    @classmethod
    def robot_status(cls, robot_id: str) -> str:
        """Robot -> cloud: PolicyStatus and health as JSON (retained, last state wins)."""
        return f"{cls.ROOT}/robots/{validate_robot_id(robot_id)}/status"

    @classmethod
    def all_episodes(cls) -> str:
        """Coordinator subscription covering every robot's episode topic."""
        return f"{cls.ROOT}/robots/+/episodes"

    @classmethod
    def all_status(cls) -> str:
        return f"{cls.ROOT}/robots/+/status"

    @classmethod
    def policy_fleet(cls) -> str:
        """Learner/admin -> robots: the fleet-wide current policy (retained)."""
        return f"{cls.ROOT}/policy/fleet"

    @classmethod
    def all_policy(cls) -> str:
        """Every policy order topic: the fleet one and each robot's pin (monitors, the publisher)."""
        return f"{cls.ROOT}/policy/#"

    @classmethod
    def policy_robot(cls, robot_id: str) -> str:
        """Admin -> one robot: a per-robot pin/rollback that overrides the fleet policy (retained)."""
        return f"{cls.ROOT}/policy/robots/{validate_robot_id(robot_id)}"

    @classmethod
    def snapshots(cls) -> str:
        """Coordinator -> learners: newest committed snapshot version (retained)."""
        return f"{cls.ROOT}/snapshots/current"

    @classmethod
    def robot_id_from_topic(cls, topic: str) -> str:
        """Inverse of episodes()/robot_status(); raises ValueError for a foreign topic."""
        parts = topic.split("/")
        if len(parts) != 5 or "/".join(parts[:3]) != f"{cls.ROOT}/robots":
            raise ValueError(f"not an LWD robot topic: {topic!r}")
        return validate_robot_id(parts[3])
