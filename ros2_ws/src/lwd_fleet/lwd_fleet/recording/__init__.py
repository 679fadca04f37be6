"""Episode recording on the robot: the writer behind the recorder node, and crash recovery.

Plain Python (no rclpy): the recorder node feeds it from ROS callbacks, the benchmark feeds it
directly. See lwd_fleet.nodes.recorder_node for the episode lifecycle on the ROS side.
"""

from lwd_fleet.recording.core import (
    EpisodeRecorder,
    EpisodeStats,
    Frame,
    RecorderConfig,
    RecorderError,
    StepRecord,
    cdr_header_stamp_ns,
    joint_vector,
)
from lwd_fleet.recording.recovery import QUARANTINE_DIR, RECOVERY_DIR, RecoveryResult, recover_spool
from lwd_protocol.names import RosTopics

# std_msgs/String, JSON, 1 Hz; read from lwd_protocol.names once it defines it
RECORDER_STATUS_TOPIC: str = RosTopics.RECORDER_STATUS

__all__ = [
    "QUARANTINE_DIR",
    "RECORDER_STATUS_TOPIC",
    "RECOVERY_DIR",
    "EpisodeRecorder",
    "EpisodeStats",
    "Frame",
    "RecorderConfig",
    "RecorderError",
    "RecoveryResult",
    "StepRecord",
    "cdr_header_stamp_ns",
    "joint_vector",
    "recover_spool",
]
