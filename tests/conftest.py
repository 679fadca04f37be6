"""Session fixtures that start REAL services on 127.0.0.1 and stop them by PID.

- mqtt_broker: mosquitto with a password file, an ACL and persistence (no anonymous access)
- s3_store:    SeaweedFS `weed mini` S3 API with configured identities (never anonymous)
- ros_env:     an isolated ROS 2 context (LOCALHOST discovery, unique domain id, temp ROS_HOME),
               applied to this process and returned as an env dict for child processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lwd_learner.localstack import MosquittoBroker, MqttIdentity, S3Identity, SeaweedS3
from lwd_learner.localstack.ros_env import apply_to_current_process, pick_domain_id, ros_isolated_env

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests.helpers importable as `helpers`

ROBOT_IDS = ("robot_01", "robot_02")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip cleanly on machines without an NVIDIA GPU (CI never has one)."""
    has_gpu = os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="no NVIDIA GPU on this machine"))


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    identities = [
        MqttIdentity.generate("coordinator", "coordinator"),
        MqttIdentity.generate("learner", "learner"),
        MqttIdentity.generate("admin", "admin"),
        *(MqttIdentity.generate(rid, "robot") for rid in ROBOT_IDS),
    ]
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), identities).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    identities = [
        S3Identity.admin(),
        S3Identity.coordinator(),
        S3Identity.learner(),
        *(S3Identity.robot(rid) for rid in ROBOT_IDS),
    ]
    store = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"), identities).start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="session")
def ros_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Isolation variables applied to this process (for in-process rclpy) and returned for children."""
    ros_home = tmp_path_factory.mktemp("ros_home")
    domain_id = pick_domain_id()
    apply_to_current_process(ros_home, domain_id)
    return ros_isolated_env(ros_home, domain_id)
