"""Object-store layout (S3 API: MinIO in production, SeaweedFS on one machine).

Keys are idempotent by id: re-uploading an episode or a policy version overwrites the same
object with the same bytes, so at-least-once delivery never creates duplicates. Each robot
writes only under its own prefix of the episodes bucket; robots only read the policies bucket.
"""

from __future__ import annotations

import re

from lwd_protocol.names import validate_robot_id

EPISODES_BUCKET = "lwd-episodes"
POLICIES_BUCKET = "lwd-policies"
OFFLINE_BUCKET = "lwd-offline"
BUCKETS = (EPISODES_BUCKET, POLICIES_BUCKET, OFFLINE_BUCKET)

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "policy.onnx"
REFERENCE_IO_NAME = "reference_io.npz"

_EPISODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def validate_episode_id(episode_id: str) -> str:
    if not isinstance(episode_id, str) or not _EPISODE_ID_RE.match(episode_id) or ".." in episode_id:
        raise ValueError(f"invalid episode id {episode_id!r}")
    return episode_id


def episode_key(robot_id: str, episode_id: str) -> str:
    """Key of an uploaded robot episode in EPISODES_BUCKET."""
    return f"{validate_robot_id(robot_id)}/{validate_episode_id(episode_id)}.mcap"


def robot_episode_prefix(robot_id: str) -> str:
    return f"{validate_robot_id(robot_id)}/"


def offline_episode_key(source: str, episode_id: str) -> str:
    """Key of an offline-buffer episode (demo | rollout | play) in OFFLINE_BUCKET."""
    if source not in ("demo", "rollout", "play"):
        raise ValueError(f"unknown offline source {source!r}")
    return f"{source}/{validate_episode_id(episode_id)}.mcap"


def policy_prefix(version: int) -> str:
    """Folder of one immutable policy version in POLICIES_BUCKET, e.g. v000012/."""
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"policy version must be a positive int, got {version!r}")
    return f"v{version:06d}/"


def policy_key(version: int, name: str) -> str:
    if "/" in name or not name:
        raise ValueError(f"invalid artifact file name {name!r}")
    return policy_prefix(version) + name
