"""msg/ is the single source of truth: lwd_msgs is built from it, MCAP schemas carry its text,
and bytes written by the episode writer decode in rclpy (and vice versa)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lwd_protocol.interfaces import definition_text, full_definition

REPO = Path(__file__).resolve().parents[2]
SHARE = Path(sys.prefix) / "share"
VENDORED = [
    "std_msgs/msg/Header",
    "builtin_interfaces/msg/Time",
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/JointState",
    "sensor_msgs/msg/Joy",
    "rosgraph_msgs/msg/Clock",
]


@pytest.mark.parametrize("type_name", VENDORED)
def test_vendored_upstream_definitions_match_installed_ros(type_name):
    installed = SHARE / f"{type_name}.msg"
    if not installed.is_file():
        pytest.skip(f"ROS package for {type_name} not installed")
    assert definition_text(type_name) == installed.read_text()


@pytest.mark.parametrize(
    "path", sorted((REPO / "msg").glob("*.msg")) + sorted((REPO / "msg").glob("*.srv")), ids=lambda p: p.name
)
def test_lwd_msgs_built_from_repo_msg_dir(path):
    kind = path.suffix[1:]
    installed = SHARE / "lwd_msgs" / kind / path.name
    assert installed.is_file(), f"{path.name} is not in the built lwd_msgs package (run make setup)"
    assert installed.read_text() == path.read_text()
    if kind == "msg":
        assert definition_text(f"lwd_msgs/msg/{path.stem}") == path.read_text()


def test_full_definition_lists_each_dependency_once():
    text = full_definition("lwd_msgs/msg/PolicyStatus")
    assert text.count("MSG: std_msgs/Header") == 1
    assert text.count("MSG: builtin_interfaces/Time") == 1


def test_cdr_bytes_interchangeable_with_rclpy(tmp_path):
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    from lwd_msgs.msg import ExecutedAction
    from lwd_protocol.episode import EpisodeEnd, EpisodeStart, Outcome
    from lwd_protocol.episode_io import EpisodeWriter, read_episode

    start = EpisodeStart(episode_id="robot_01-x-1", robot_id="robot_01", task="restocking", instruction="stock it")
    writer = EpisodeWriter(tmp_path / "e.mcap", start)
    for step in range(3):
        # step 1 is written from rclpy's own serializer, the others by the protocol encoder
        position = np.arange(16, dtype=np.float32) + step
        if step == 1:
            msg = ExecutedAction(step=step, source=1, policy_version=4, position=position.tolist())
            writer.write_raw(
                "/action", "lwd_msgs/msg/ExecutedAction", rclpy_serialization.serialize_message(msg), step, 1000 + step
            )
        else:
            writer.write_action(position, step, 1000 + step, source=0, policy_version=4)
        writer.write_joint_state(np.zeros(16), step, 1000 + step)
    path = writer.close(EpisodeEnd(outcome=Outcome.SUCCESS, num_steps=3))
    episode = read_episode(path)
    np.testing.assert_array_equal(episode.action[1], np.arange(16, dtype=np.float32) + 1)
    assert episode.action_source.tolist() == [0, 1, 0]

    # and the protocol encoder's bytes decode in rclpy
    from mcap.reader import make_reader

    with open(path, "rb") as fh:
        raw = [m.data for _, c, m in make_reader(fh).iter_messages(topics=["/action"])]
    decoded = rclpy_serialization.deserialize_message(raw[2], ExecutedAction)
    assert decoded.step == 2 and decoded.policy_version == 4
    np.testing.assert_array_equal(np.asarray(decoded.position, np.float32), np.arange(16, dtype=np.float32) + 2)


def test_action_source_enum_mirrors_executed_action_constants():
    from lwd_msgs.msg import ExecutedAction
    from lwd_protocol.episode import ActionSource

    assert ActionSource.POLICY == ExecutedAction.SOURCE_POLICY
    assert ActionSource.HUMAN == ExecutedAction.SOURCE_HUMAN
    assert ActionSource.HOLD == ExecutedAction.SOURCE_HOLD
