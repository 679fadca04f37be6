"""Small JSON messages on MQTT: episode announcements, policy announcements, robot policy status.

EpisodeAnnouncement is what a robot publishes after an episode's upload completed. PolicyAnnouncement
is the signed publish/rollback order the learner or an admin retains on the policy topics.
RobotPolicyStatus is the robot's retained report of which policy it runs.

An episode announcement is the only thing the Coordinator learns from a robot directly, so the parser is strict:
every field is type- and range-checked, unknown fields are refused, and the error names the
field. The key must equal store.episode_key(robot_id, episode_id), so a robot can't point the
Coordinator at another robot's prefix. Payloads are size-limited before JSON decoding so a
garbage or hostile message costs nothing.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from lwd_protocol.episode import Outcome
from lwd_protocol.names import MqttTopics, validate_robot_id
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


# --- policy announcements (learner/admin -> robots) ------------------------------------------------
POLICY_KINDS = ("publish", "rollback")
FLEET_TARGET = "fleet"
MAX_POLICY_ANNOUNCEMENT_BYTES = 4096
MAX_NOTE_CHARS = 256
_ISSUER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
_SIGNATURE_KEYS = ("alg", "key_id", "value")


def utc_timestamp(t_ns: int | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the only form PolicyAnnouncement.created_at accepts."""
    t_ns = time.time_ns() if t_ns is None else t_ns
    stamp = datetime.fromtimestamp(t_ns // 1_000_000_000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(t_ns // 1_000_000) % 1000:03d}Z"


@dataclass(frozen=True)
class PolicyAnnouncement:
    """A signed order telling robots which policy version to run (retained on the policy topics).

    kind "publish" moves robots to a new version; a robot refuses a publish naming a version
    below the one it already accepted. kind "rollback" is the only way to move a robot to an
    older version. ``seq`` orders every order an issuer makes (strictly increasing per topic), so
    a replayed old order, validly signed or not, is refused. ``target`` is "fleet" on the fleet
    topic or the robot id on that robot's pin topic; the signature covers it, so an order meant
    for one robot can't be replayed on another's topic.
    """

    kind: str
    version: int
    parent_version: int
    manifest_sha256: str  # sha256 of the manifest.json bytes in the store: binds order to artifact
    created_at: str  # when the order was issued, utc_timestamp() form
    issued_by: str  # the admin/learner identity that issued it (for the audit trail)
    target: str  # "fleet" or a robot id
    seq: int  # strictly increasing per issuer and topic (ms since epoch, bumped past the last one)
    note: str = ""  # e.g. the reason for a rollback
    signature: dict[str, str] | None = None
    v: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _validate_policy(asdict(self))

    @property
    def is_fleet(self) -> bool:
        return self.target == FLEET_TARGET

    def topic(self) -> str:
        """The MQTT topic this order belongs on."""
        return MqttTopics.policy_fleet() if self.is_fleet else MqttTopics.policy_robot(self.target)

    def signing_payload(self) -> bytes:
        """Canonical JSON of every field except the signature (what lwd_protocol.signing signs)."""
        data = asdict(self)
        data.pop("signature")
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    def to_json(self) -> bytes:
        data = json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()
        if len(data) > MAX_POLICY_ANNOUNCEMENT_BYTES:
            raise AnnouncementError("", f"encoded size {len(data)} > {MAX_POLICY_ANNOUNCEMENT_BYTES} bytes")
        return data

    @classmethod
    def from_json(cls, payload: bytes | str) -> PolicyAnnouncement:
        """Parse and validate; raise AnnouncementError naming the bad field."""
        return cls(**_validate_policy(_json_object(payload, MAX_POLICY_ANNOUNCEMENT_BYTES)))


_POLICY_FIELDS = (
    "v",
    "kind",
    "version",
    "parent_version",
    "manifest_sha256",
    "created_at",
    "issued_by",
    "target",
    "seq",
    "note",
    "signature",
)


def _json_object(payload: bytes | str, limit: int) -> dict[str, Any]:
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    if len(raw) > limit:
        raise AnnouncementError("", f"payload of {len(raw)} bytes exceeds {limit}")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnouncementError("", f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise AnnouncementError("", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _check_fields(obj: dict[str, Any], fields: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise AnnouncementError(unknown[0], "unknown field")
    for name in fields:
        if name not in obj and name not in optional:
            raise AnnouncementError(name, "missing")


def _check_protocol(obj: dict[str, Any]) -> None:
    version = _int(obj, "v", 0)
    if version != PROTOCOL_VERSION:
        raise AnnouncementError(
            "v", f"protocol version {version} is not supported (this build reads {PROTOCOL_VERSION})"
        )


def _validate_policy(obj: dict[str, Any]) -> dict[str, Any]:
    _check_fields(obj, _POLICY_FIELDS, optional=("note", "signature", "v"))
    obj.setdefault("v", PROTOCOL_VERSION)
    _check_protocol(obj)
    if _str(obj, "kind") not in POLICY_KINDS:
        raise AnnouncementError("kind", f"{obj['kind']!r} is not one of {list(POLICY_KINDS)}")
    version = _int(obj, "version", 1)
    parent = _int(obj, "parent_version", 0)
    if parent >= version:
        raise AnnouncementError("parent_version", f"{parent} must be below version {version}")
    if not _SHA256_RE.match(_str(obj, "manifest_sha256")):
        raise AnnouncementError("manifest_sha256", "expected 64 lowercase hex characters")
    if not _UTC_RE.match(_str(obj, "created_at")):
        raise AnnouncementError("created_at", f"{obj['created_at']!r} is not ISO-8601 UTC like 2026-01-31T12:00:00Z")
    try:
        datetime.strptime(obj["created_at"][:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError as exc:
        raise AnnouncementError("created_at", str(exc)) from exc
    if not _ISSUER_RE.match(_str(obj, "issued_by")):
        raise AnnouncementError("issued_by", f"{obj['issued_by']!r} is not a plain identity name")
    target = _str(obj, "target")
    if target != FLEET_TARGET:
        try:
            validate_robot_id(target)
        except ValueError as exc:
            raise AnnouncementError("target", f"expected {FLEET_TARGET!r} or a robot id: {exc}") from exc
    _int(obj, "seq", 1)
    if len(_str(obj, "note") if "note" in obj else "") > MAX_NOTE_CHARS:
        raise AnnouncementError("note", f"longer than {MAX_NOTE_CHARS} characters")
    sig = obj.get("signature")
    if sig is not None:
        if not isinstance(sig, dict) or set(sig) != set(_SIGNATURE_KEYS):
            raise AnnouncementError("signature", f"expected null or an object with fields {list(_SIGNATURE_KEYS)}")
        if not all(isinstance(v, str) and len(v) <= 256 for v in sig.values()):
            raise AnnouncementError("signature", "fields must be strings of at most 256 characters")
    return obj


# --- robot policy status (robot -> cloud, retained on MqttTopics.robot_status) ---------------------
POLICY_STATES = ("idle", "downloading", "building", "validating", "ready", "rejected")
MAX_STATUS_BYTES = 8192
MAX_STATUS_TEXT = 1024


@dataclass(frozen=True)
class RobotPolicyStatus:
    """The MQTT mirror of lwd_msgs/PolicyStatus plus the last rejection, for `lwd admin status`.

    The status topic is the robot's retained health record; other robot parts may add their own
    top-level keys (e.g. "pending_uploads"), so unknown keys are kept in ``extra`` instead of being
    refused, while every known field is type- and range-checked.
    """

    robot_id: str
    state: str
    active_version: int
    pending_version: int
    engine_backend: str
    message: str
    updated_at_ns: int
    rejected_version: int = 0  # last refused version (0 = none yet)
    rejected_reason: str = ""
    v: int = PROTOCOL_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate_status({k: v for k, v in asdict(self).items() if k != "extra"})

    def to_json(self) -> bytes:
        data = asdict(self)
        extra = data.pop("extra")
        data.update({k: v for k, v in extra.items() if k not in data})
        raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        if len(raw) > MAX_STATUS_BYTES:
            raise AnnouncementError("", f"encoded size {len(raw)} > {MAX_STATUS_BYTES} bytes")
        return raw

    @classmethod
    def from_json(cls, payload: bytes | str) -> RobotPolicyStatus:
        obj = _json_object(payload, MAX_STATUS_BYTES)
        known = {k: obj.pop(k) for k in list(obj) if k in _STATUS_FIELDS}
        return cls(**_validate_status(known), extra=obj)


_STATUS_FIELDS = (
    "v",
    "robot_id",
    "state",
    "active_version",
    "pending_version",
    "engine_backend",
    "message",
    "updated_at_ns",
    "rejected_version",
    "rejected_reason",
)


def _validate_status(obj: dict[str, Any]) -> dict[str, Any]:
    _check_fields(obj, _STATUS_FIELDS, optional=("v", "rejected_version", "rejected_reason"))
    obj.setdefault("v", PROTOCOL_VERSION)
    _check_protocol(obj)
    try:
        validate_robot_id(_str(obj, "robot_id"))
    except ValueError as exc:
        if isinstance(exc, AnnouncementError):
            raise
        raise AnnouncementError("robot_id", str(exc)) from exc
    if _str(obj, "state") not in POLICY_STATES:
        raise AnnouncementError("state", f"{obj['state']!r} is not one of {list(POLICY_STATES)}")
    for name in ("active_version", "pending_version", "updated_at_ns"):
        _int(obj, name, 0)
    if "rejected_version" in obj:
        _int(obj, "rejected_version", 0)
    for name in ("engine_backend", "message", "rejected_reason"):
        if name in obj and len(_str(obj, name)) > MAX_STATUS_TEXT:
            raise AnnouncementError(name, f"longer than {MAX_STATUS_TEXT} characters")
    return obj
