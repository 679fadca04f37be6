"""LWD Fleet wire protocol: the one place where the robot side and the cloud side agree.

Three contracts live here and nowhere else:
  * the episode (MCAP topics, schemas from msg/, metadata, file naming)  -> episode, episode_io
  * the policy artifact (ONNX + manifest)                                  -> manifest
  * the names (ROS topics, MQTT topics, object-store buckets and keys)     -> names, store

This package imports neither rclpy nor jax. Bump PROTOCOL_VERSION on any incompatible change
and update every side in the same commit.
"""

from lwd_protocol.version import EPISODE_FORMAT_VERSION, MANIFEST_FORMAT_VERSION, PROTOCOL_VERSION

__all__ = ["EPISODE_FORMAT_VERSION", "MANIFEST_FORMAT_VERSION", "PROTOCOL_VERSION"]
