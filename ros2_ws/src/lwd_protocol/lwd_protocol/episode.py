"""The episode contract: what one MCAP file holds and how its metadata reads.

One file = one episode of one robot on one task. Per-tick messages carry the control-step
index as the MCAP message `sequence`, so the reader aligns observations and actions by step
without trusting clocks. Metadata is split in two records: `lwd.episode` written when the
episode starts (who, what, where) and `lwd.episode.end` written when it ends (outcome,
counts). A file without the end record is a partial episode (robot crashed mid-episode).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import MISSING, asdict, dataclass, fields
from enum import Enum, IntEnum

from lwd_protocol.names import validate_robot_id
from lwd_protocol.robot_spec import CAMERA_NAMES, CONTROL_RATE_HZ, JOINT_NAMES
from lwd_protocol.store import validate_episode_id
from lwd_protocol.tasks import task_info
from lwd_protocol.version import EPISODE_FORMAT_VERSION, check_version

EPISODE_SUFFIX = ".mcap"
PARTIAL_SUFFIX = ".partial"
START_RECORD = "lwd.episode"
END_RECORD = "lwd.episode.end"


class EpisodeTopics:
    """MCAP topics inside an episode file and their ROS types."""

    JOINT_STATE = "/observation/joint_state"
    SIM_STATE = "/observation/sim_state"
    ACTION = "/action"
    CONTROL_MODE = "/control_mode"

    @staticmethod
    def image(camera: str) -> str:
        if camera not in CAMERA_NAMES:
            raise ValueError(f"unknown camera {camera!r}; expected one of {CAMERA_NAMES}")
        return f"/observation/images/{camera}"


TOPIC_TYPES: dict[str, str] = {
    EpisodeTopics.JOINT_STATE: "sensor_msgs/msg/JointState",
    EpisodeTopics.SIM_STATE: "lwd_msgs/msg/SimState",
    EpisodeTopics.ACTION: "lwd_msgs/msg/ExecutedAction",
    EpisodeTopics.CONTROL_MODE: "lwd_msgs/msg/ControlMode",
    **{EpisodeTopics.image(c): "sensor_msgs/msg/Image" for c in CAMERA_NAMES},
}
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
REQUIRED_TOPICS = (EpisodeTopics.JOINT_STATE, EpisodeTopics.ACTION)


class Outcome(str, Enum):
    """How an episode ended. Reward is 1 only at a SUCCESS termination (paper Alg. 1)."""

    UNKNOWN = "unknown"
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    ABORTED = "aborted"

    @property
    def is_success(self) -> bool:
        return self is Outcome.SUCCESS


class ActionSource(IntEnum):
    """Who chose an executed action: mirrors lwd_msgs/ExecutedAction SOURCE_* (a test checks)."""

    POLICY = 0
    HUMAN = 1
    HOLD = 2


class EpisodeSource(str, Enum):
    """Where the data came from (paper Table IV plus online deployment)."""

    DEMO = "demo"  # expert demonstrations, all successes
    ROLLOUT = "rollout"  # historical policy rollouts, successes and failures
    PLAY = "play"  # exploration of failure modes, labelled unsuccessful
    ONLINE = "online"  # fleet deployment of the current policy (may contain interventions)


def new_episode_id(robot_id: str, now_ns: int | None = None) -> str:
    """Time-sortable, globally unique id: <robot>-<UTC yyyymmddThhmmss>-<8 hex>."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns / 1e9))
    return f"{validate_robot_id(robot_id)}-{stamp}-{secrets.token_hex(4)}"


def episode_filename(episode_id: str) -> str:
    return validate_episode_id(episode_id) + EPISODE_SUFFIX


@dataclass
class EpisodeStart:
    """Metadata known when an episode begins."""

    episode_id: str
    robot_id: str
    task: str
    instruction: str
    source: EpisodeSource = EpisodeSource.ONLINE
    policy_version: int = 0
    started_at_ns: int = 0
    control_rate_hz: float = CONTROL_RATE_HZ
    joint_names: tuple[str, ...] = JOINT_NAMES
    cameras: tuple[str, ...] = CAMERA_NAMES
    seed: int = -1
    format_version: int = EPISODE_FORMAT_VERSION

    def __post_init__(self) -> None:
        validate_episode_id(self.episode_id)
        validate_robot_id(self.robot_id)
        task_info(self.task)
        self.source = EpisodeSource(self.source)
        self.joint_names = tuple(self.joint_names)
        self.cameras = tuple(self.cameras)

    def to_record(self) -> dict[str, str]:
        return _to_record(self)

    @classmethod
    def from_record(cls, record: dict[str, str]) -> EpisodeStart:
        check_version("episode", int(record.get("format_version", -1)), EPISODE_FORMAT_VERSION)
        return _from_record(cls, record, START_RECORD)


@dataclass
class EpisodeEnd:
    """Metadata known when an episode ends."""

    outcome: Outcome
    num_steps: int
    num_intervention_steps: int = 0
    num_interventions: int = 0
    subtasks_done: int = 0
    num_subtasks: int = 0
    ended_at_ns: int = 0
    policy_versions: tuple[int, ...] = ()
    recovered: bool = False  # True when rebuilt from a partial file after a crash
    note: str = ""

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)
        self.policy_versions = tuple(int(v) for v in self.policy_versions)
        if self.num_steps < 0 or self.num_intervention_steps > self.num_steps:
            raise ValueError(f"inconsistent step counts: {self.num_steps=} {self.num_intervention_steps=}")

    @property
    def score(self) -> float:
        """Step-wise score (fraction of subtasks done), or binary success without subtasks."""
        if self.num_subtasks > 0:
            return self.subtasks_done / self.num_subtasks
        return float(self.outcome.is_success)

    def to_record(self) -> dict[str, str]:
        return _to_record(self)

    @classmethod
    def from_record(cls, record: dict[str, str]) -> EpisodeEnd:
        return _from_record(cls, record, END_RECORD)


def _to_record(obj: object) -> dict[str, str]:
    """MCAP metadata is a str->str map: JSON-encode each field (enums by value)."""
    out = {}
    for key, value in asdict(obj).items():
        if isinstance(value, Enum):
            value = value.value
        out[key] = json.dumps(value)
    return out


def _from_record(cls: type, record: dict[str, str], name: str):
    kwargs = {}
    for f in fields(cls):
        if f.name in record:
            try:
                kwargs[f.name] = json.loads(record[f.name])
            except json.JSONDecodeError as exc:
                raise ValueError(f"metadata {name}.{f.name} is not valid JSON: {record[f.name]!r}") from exc
    missing = [
        f.name for f in fields(cls) if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ValueError(f"metadata record {name!r} lacks required field(s) {missing}")
    return cls(**kwargs)
