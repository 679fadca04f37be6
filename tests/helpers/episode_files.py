"""Recorder test helpers: stand-in camera messages and what an episode file stored per camera."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mcap.reader import make_reader

from lwd_protocol.episode import EpisodeTopics
from lwd_protocol.robot_spec import CAMERA_NAMES


def rgb_image_msg(img: np.ndarray) -> SimpleNamespace:
    """The sensor_msgs/Image fields the recorder reads, for an (H, W, 3) uint8 frame (no rclpy needed)."""
    h, w, _ = img.shape
    return SimpleNamespace(height=h, width=w, encoding="rgb8", step=w * 3, data=img.tobytes())


def stored_image_types(path: Path) -> set[str]:
    """ROS message types on the episode's camera topics, read from the MCAP summary."""
    cameras = {EpisodeTopics.image(c) for c in CAMERA_NAMES}
    with open(path, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary is not None, f"{path} has no MCAP summary"
    return {summary.schemas[ch.schema_id].name for ch in summary.channels.values() if ch.topic in cameras}
