"""Plain records the Coordinator stores and returns (no DB types leak out of the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class EpisodeRecord:
    """A verified episode: the object exists, its bytes hash to sha256 and it decodes."""

    episode_id: str
    robot_id: str
    key: str
    sha256: str
    size: int
    task: str
    outcome: str
    num_steps: int
    source: str
    committed_at_ns: int  # robot clock, from the announcement
    verified_at_ns: int  # coordinator clock
    version: int | None = None  # first snapshot version that contains it (None = pending)
    policy_version: int = 0  # newest policy version that acted in the episode (0 = none: human/hold only)


@dataclass(frozen=True)
class QuarantineRecord:
    """An announcement that was refused; the object (if any) is kept for inspection."""

    reason: str
    topic: str
    robot_id: str | None = None
    episode_id: str | None = None
    key: str | None = None
    payload_head: bytes = b""
    received_at_ns: int = 0


@dataclass(frozen=True)
class SnapshotInfo:
    version: int
    parent: int
    num_episodes: int
    added: int
    created_at_ns: int


@dataclass
class RobotStats:
    episodes: int = 0
    committed: int = 0
    quarantined: int = 0
    duplicates: int = 0
    steps: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class AddResult(str, Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # same episode_id, same sha256: at-least-once redelivery
    CONFLICT = "conflict"  # same episode_id, different bytes: the caller quarantines it
