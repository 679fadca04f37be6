"""A corpus of malformed inputs, each paired with the words its error must contain.

Built programmatically (not checked-in binaries) so it follows the protocol as it evolves: every
case starts from a valid episode/manifest/announcement and breaks exactly one thing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lwd_protocol.announce import EpisodeAnnouncement
from lwd_protocol.episode import EpisodeEnd, EpisodeStart, EpisodeTopics, Outcome, new_episode_id
from lwd_protocol.episode_io import EpisodeWriter
from lwd_protocol.robot_spec import ACTION_DIM
from lwd_protocol.tasks import TASK_NAMES

ROBOT = "robot_01"


@dataclass(frozen=True)
class BadInput:
    name: str
    payload: bytes
    needle: str  # must appear (case-insensitive) in the error message


def _episode(tmp: Path, mutate: Callable[[EpisodeWriter, int, int], bool] | None = None, steps: int = 8) -> bytes:
    """A valid episode; `mutate(writer, t, t0)` may write its own messages for step t (return True to skip ours)."""
    eid = new_episode_id(ROBOT)
    start = EpisodeStart(episode_id=eid, robot_id=ROBOT, task=TASK_NAMES[0], instruction="corpus", cameras=())
    writer = EpisodeWriter(tmp / f"{eid}.mcap", start)
    t0 = time.time_ns()
    q = np.zeros(ACTION_DIM, np.float32)
    for t in range(steps):
        if mutate is not None and mutate(writer, t, t0):
            continue
        writer.write_joint_state(q + 0.01 * t, t, t0 + t)
        writer.write_action(q + 0.01 * t, t, t0 + t, source=0, policy_version=0)
    path = writer.close(EpisodeEnd(outcome=Outcome.SUCCESS, num_steps=steps))
    return path.read_bytes()


def valid_episode(tmp: Path) -> bytes:
    return _episode(tmp)


def episode_corpus(tmp: Path) -> list[BadInput]:
    tmp.mkdir(parents=True, exist_ok=True)
    good = _episode(tmp)
    q = np.zeros(ACTION_DIM, np.float32)

    def nan_action(w, t, t0):
        if t != 3:
            return False
        w.write_joint_state(q, t, t0 + t)
        w.write_action(np.full(ACTION_DIM, np.nan, np.float32), t, t0 + t, source=0, policy_version=0)
        return True

    def inf_state(w, t, t0):
        if t != 5:
            return False
        w.write_joint_state(np.full(ACTION_DIM, np.inf, np.float32), t, t0 + t)
        w.write_action(q, t, t0 + t, source=0, policy_version=0)
        return True

    def short_action(w, t, t0):
        if t != 2:
            return False
        w.write_joint_state(q, t, t0 + t)
        w.write_action(np.zeros(ACTION_DIM - 1, np.float32), t, t0 + t, source=0, policy_version=0)
        return True

    def no_actions(w, t, t0):
        w.write_joint_state(q, t, t0 + t)
        return True

    def wrong_schema(w, t, t0):
        w.write_joint_state(q, t, t0 + t)
        # the action topic carrying JointState instead of ExecutedAction: a schema mismatch on a known topic
        msg = {"name": [], "position": q.tolist(), "velocity": [], "effort": []}
        w.write(EpisodeTopics.ACTION, msg, t, t0 + t, type_name="sensor_msgs/msg/JointState")
        return True

    def nan_sim_state(w, t, t0):
        w.write_joint_state(q, t, t0 + t)
        w.write_action(q, t, t0 + t, source=0, policy_version=0)
        state = np.zeros(8, np.float32)
        state[2] = np.nan if t == 6 else 0.0
        w.write_sim_state(state, t, t0 + t, subtask_index=0, num_subtasks=1, success=False, failed=False)
        return True

    def gap(w, t, t0):
        return t == 4

    def step_overflow(w, t, t0):
        if t != 7:
            return False
        w.write_joint_state(q, 10**9, t0 + t)
        w.write_action(q, 10**9, t0 + t, source=0, policy_version=0)
        return True

    corpus = [
        BadInput("empty file", b"", "unreadable"),
        BadInput("not mcap", b"GARBAGE" * 100, "unreadable"),
        BadInput("truncated to half", good[: len(good) // 2], ""),
        BadInput("truncated header", good[:20], ""),
        BadInput("footer chopped", good[:-40], ""),
        BadInput("corrupt middle", good[:200] + bytes(b ^ 0xFF for b in good[200:400]) + good[400:], ""),
        BadInput("NaN in actions", _episode(tmp, nan_action), "non-finite actions"),
        BadInput("inf in joint state", _episode(tmp, inf_state), "non-finite joint"),
        BadInput("wrong action length", _episode(tmp, short_action), "expected"),
        BadInput("missing action topic", _episode(tmp, no_actions), "missing topic"),
        BadInput("wrong schema", _episode(tmp, wrong_schema), "schema"),
        BadInput("step gap", _episode(tmp, gap), "steps"),
        BadInput("NaN in sim state", _episode(tmp, nan_sim_state), "non-finite sim state"),
        BadInput("step beyond limit", _episode(tmp, step_overflow), "limit"),
    ]
    return corpus


def announcement_corpus() -> list[BadInput]:
    good = json.loads(
        EpisodeAnnouncement(
            episode_id="e1",
            robot_id=ROBOT,
            key=f"{ROBOT}/e1.mcap",
            sha256="0" * 64,
            size=10,
            task=TASK_NAMES[0],
            outcome="success",
            num_steps=3,
            committed_at_ns=1,
        ).to_json()
    )

    def variant(**changes) -> bytes:
        data = dict(good)
        for k, v in changes.items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = v
        return json.dumps(data).encode()

    return [
        BadInput("binary garbage", bytes(range(256)), ""),
        BadInput("json array", b"[1, 2, 3]", ""),
        BadInput("truncated json", variant()[:-5], ""),
        BadInput("missing episode id", variant(episode_id=None), "episode_id"),
        BadInput("negative size", variant(size=-1), "size"),
        BadInput("sha256 not hex", variant(sha256="z" * 64), "sha256"),
        BadInput("path traversal key", variant(key="../../etc/passwd"), "key"),
        BadInput("huge payload", b'{"a": "' + b"x" * (2 * 1024 * 1024) + b'"}', ""),
    ]


def manifest_bytes_corpus(valid_json: str) -> list[BadInput]:
    data = json.loads(valid_json)

    def variant(path: tuple, value) -> bytes:
        doc = json.loads(valid_json)
        node = doc
        for key in path[:-1]:
            node = node[key]
        if value is None:
            node.pop(path[-1])
        else:
            node[path[-1]] = value
        return json.dumps(doc).encode()

    files = data["files"]
    first_file = next(iter(files))
    return [
        BadInput("not json", b"{not json", "not valid json"),
        BadInput("json list", b"[]", "json object"),
        BadInput("missing version", variant(("version",), None), "version"),
        BadInput("version as string", variant(("version",), "7"), "version"),
        BadInput("bad sha256", variant(("files", first_file, "sha256"), "ABC"), "sha256"),
        BadInput("model not listed", variant(("model_file",), "other.onnx"), "model_file"),
        BadInput("path in file name", variant(("files",), {**files, "../x": files[first_file]}), "file name"),
        BadInput(
            "NaN std",
            variant(("normalization", "state_std"), [float("nan")] * len(data["normalization"]["state_std"])),
            "non-finite",
        ),
        BadInput(
            "zero std",
            variant(("normalization", "action_std"), [0.0] * len(data["normalization"]["action_std"])),
            "positive",
        ),
        BadInput("future format", variant(("format_version",), 999), "version"),
        BadInput("oversize", b" " * (17 * 1024 * 1024), "limit"),
    ]
