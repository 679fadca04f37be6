"""Wire names are built from validated ids, so no robot id can escape its topic or key prefix."""

from __future__ import annotations

import pytest

from lwd_protocol.names import MqttTopics, RosTopics
from lwd_protocol.store import episode_key, policy_key


def test_topic_layout_and_inverse():
    topic = MqttTopics.episodes("robot_03")
    assert topic == f"{MqttTopics.ROOT}/robots/robot_03/episodes"
    assert MqttTopics.robot_id_from_topic(topic) == "robot_03"
    with pytest.raises(ValueError):
        MqttTopics.robot_id_from_topic("other/robots/robot_03/episodes")


@pytest.mark.parametrize("bad", ["", "+", "#", "a/b", "Robot", "x" * 64, "-lead"])
def test_wildcards_and_separators_cannot_be_robot_ids(bad):
    with pytest.raises(ValueError):
        MqttTopics.episodes(bad)
    with pytest.raises(ValueError):
        episode_key(bad, "e1")


def test_store_keys():
    assert episode_key("robot_01", "e-1") == "robot_01/e-1.mcap"
    assert policy_key(12, "policy.onnx") == "v000012/policy.onnx"
    with pytest.raises(ValueError):
        policy_key(0, "policy.onnx")


def test_camera_topics():
    assert RosTopics.camera_image("head") == "cameras/head/image_raw"
    with pytest.raises(ValueError):
        RosTopics.camera_image("tail")
