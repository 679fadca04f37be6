"""Camera topics beyond the raw image (which lwd_protocol.names.RosTopics.camera_image names).

The compressed topic follows image_transport's convention (``<raw topic>/compressed``), so
standard ROS tools find it. Both names live in lwd_protocol.names.RosTopics.
"""

from __future__ import annotations

from lwd_protocol.names import RosTopics

CAMERA_STATUS_TOPIC: str = RosTopics.CAMERA_STATUS  # std_msgs/String, JSON


def compressed_topic(camera: str) -> str:
    """sensor_msgs/CompressedImage topic of one camera: cameras/<name>/image_raw/compressed."""
    return RosTopics.camera_compressed(camera)
