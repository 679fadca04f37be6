"""Camera capture for the robot's three cameras (head, left wrist, right wrist).

One topic set on real robots and in sim, so nothing above the cameras can tell them apart:

- ``cameras/<cam>/image_raw`` (sensor_msgs/Image, rgb8, stamped at capture): published by the
  camera node from V4L2 devices on a real robot; in sim the sim driver renders and publishes
  these itself (it owns the simulated sensors as a hardware driver owns joints), so the camera
  node runs with ``backend: sim`` and does not republish them (no extra copy or latency).
- ``cameras/<cam>/image_raw/compressed`` (sensor_msgs/CompressedImage, optional): published by
  the camera node in every backend (from its own frames, or from the sim driver's).
- ``cameras/status`` (std_msgs/String, JSON, 1 Hz): per camera state/fps/age/error, from the
  camera node in every backend.

Stale or missing cameras are flagged where they are consumed, by
lwd_fleet.control.camera_sync.CameraSynchronizer (the controller's synchroniser).
"""

from lwd_fleet.cameras.sources import (
    BACKENDS,
    CameraConfig,
    CameraError,
    FrameSource,
    OpenCvSource,
    PatternSource,
    make_source,
)
from lwd_fleet.cameras.topics import CAMERA_STATUS_TOPIC, compressed_topic

__all__ = [
    "BACKENDS",
    "CAMERA_STATUS_TOPIC",
    "CameraConfig",
    "CameraError",
    "FrameSource",
    "OpenCvSource",
    "PatternSource",
    "compressed_topic",
    "make_source",
]
