"""EpisodeAnnouncement: the MQTT message a robot publishes after an episode's upload completed.

It is the only thing the Coordinator learns from a robot directly, so the parser is strict:
every field is type- and range-checked, unknown fields are refused, and the error names the
field. The key must equal store.episode_key(robot_id, episode_id), so a robot can't point the
Coordinator at another robot's prefix. Payloads are size-limited before JSON decoding so a
garbage or hostile message costs nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from lwd_protocol.episode import Outcome
from lwd_protocol.names import validate_robot_id
from lwd_protocol.store import episode_key, validate_episode_id
from lwd_protocol.version import PROTOCOL_VERSION

MAX_ANNOUNCEMENT_BYTES = 4096
MAX_TASK_CHARS = 128
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class AnnouncementError(ValueError):
    """A payload is not a valid EpisodeAnnouncement; `field` names the offending field ('' = whole)."""

    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"bad announcement field {field!r}: {problem}" if field else f"bad announcement: {problem}")


@dataclass(frozen=True)
class EpisodeAnnouncement:
    """One uploaded episode: where it is, what it hashes to, and a summary for stats."""

    episode_id: str
    robot_id: str
    key: str
    sha256: str
    size: int
    task: str
    outcome: str
    num_steps: int
    committed_at_ns: int  # robot wall clock when the episode file was committed (for latency only)
    v: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _validate(asdict(self))

    def to_json(self) -> bytes:
        data = json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()
        if len(data) > MAX_ANNOUNCEMENT_BYTES:
            raise AnnouncementError("", f"encoded size {len(data)} > {MAX_ANNOUNCEMENT_BYTES} bytes")
        return data

    @classmethod
    def from_json(cls, payload: bytes | str) -> EpisodeAnnouncement:
        """Parse and validate; raise AnnouncementError naming the bad field."""
        raw = payload.encode() if isinstance(payload, str) else bytes(payload)
        if len(raw) > MAX_ANNOUNCEMENT_BYTES:
            raise AnnouncementError("", f"payload of {len(raw)} bytes exceeds {MAX_ANNOUNCEMENT_BYTES}")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnnouncementError("", f"not UTF-8 JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise AnnouncementError("", f"expected a JSON object, got {type(obj).__name__}")
        return cls(**_validate(obj))


_FIELDS = (
    "v",
    "episode_id",
    "robot_id",
    "key",
    "sha256",
    "size",
    "task",
    "outcome",
    "num_steps",
    "committed_at_ns",
)


def _int(obj: dict[str, Any], name: str, minimum: int) -> int:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnnouncementError(name, f"expected an integer, got {type(value).__name__}")
    if value < minimum:
        raise AnnouncementError(name, f"{value} < {minimum}")
    return value


def _str(obj: dict[str, Any], name: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise AnnouncementError(name, f"expected a string, got {type(value).__name__}")
    return value


def _validate(obj: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(obj) - set(_FIELDS))
    if unknown:
        raise AnnouncementError(unknown[0], "unknown field")
    for name in _FIELDS:
        if name not in obj:
            raise AnnouncementError(name, "missing")
    version = _int(obj, "v", 0)
    if version != PROTOCOL_VERSION:
        raise AnnouncementError(
            "v", f"protocol version {version} is not supported (this build reads {PROTOCOL_VERSION})"
        )
    for name, check in (("robot_id", validate_robot_id), ("episode_id", validate_episode_id)):
        try:
            check(_str(obj, name))
        except ValueError as exc:
            if isinstance(exc, AnnouncementError):
                raise
            raise AnnouncementError(name, str(exc)) from exc
    expected_key = episode_key(obj["robot_id"], obj["episode_id"])
    if _str(obj, "key") != expected_key:
        raise AnnouncementError("key", f"{obj['key']!r} != expected {expected_key!r}")
    if not _SHA256_RE.match(_str(obj, "sha256")):
        raise AnnouncementError("sha256", "expected 64 lowercase hex characters")
    _int(obj, "size", 1)
    task = _str(obj, "task")
    if not task or len(task) > MAX_TASK_CHARS:
        raise AnnouncementError("task", f"expected 1-{MAX_TASK_CHARS} characters")
    try:
        Outcome(_str(obj, "outcome"))
    except ValueError as exc:
        raise AnnouncementError("outcome", f"{obj['outcome']!r} is not one of {[o.value for o in Outcome]}") from exc
    _int(obj, "num_steps", 0)
    _int(obj, "committed_at_ns", 0)
    return obj
