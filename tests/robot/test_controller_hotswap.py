"""Policy hot swap over DDS: a version announced "ready" by policy sync is loaded in the background but
drives the arms only from the next episode boundary; a version that fails verification never drives,
the running one stays, and controller/active_policy says why."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_controller_harness import START_POSE, RobotProbe, assert_safe, controller_params, running_controller

from lwd_fleet.inference.artifact import artifact_dir
from lwd_protocol.store import MODEL_NAME

pytestmark = pytest.mark.ros
pytest.importorskip("onnx", reason="the `onnx` package builds the test policies")
from lwd_fleet.inference.synthetic import target_policy  # noqa: E402

POLICY = 0
STARTED, ENDED = 0, 1


def _target(value: float) -> np.ndarray:
    t = START_POSE.copy()
    t[0] = value
    return t


@pytest.fixture
def probe(ros_env):
    import rclpy

    rclpy.init()
    robot = RobotProbe()
    try:
        yield robot
    finally:
        robot.close()
        rclpy.shutdown()


def test_swap_happens_only_at_an_episode_boundary(ros_env, probe, tmp_path) -> None:
    cache = tmp_path / "cache"
    target_policy(1, _target(0.3)).write(artifact_dir(cache, 1))
    target_policy(2, _target(-0.3), action_std=2.0).write(artifact_dir(cache, 2))
    bad = artifact_dir(cache, 3)
    shutil.copytree(artifact_dir(cache, 2), bad)
    target_policy(3, _target(0.9)).write(bad)
    model = (bad / MODEL_NAME).read_bytes()
    (bad / MODEL_NAME).write_bytes(model[:-4] + b"evil")  # same size, different bytes

    def versions_since(t: float) -> set[int]:
        return {s.value.policy_version for s in probe.executed if s.wall >= t and s.value.source == POLICY}

    params = controller_params(policy_dir=str(artifact_dir(cache, 1)), policy_cache_dir=str(cache))
    with running_controller(ros_env, params, tmp_path) as ctl:
        assert probe.spin_until(lambda: len(versions_since(0)) > 0, 60, ctl, "policy v1"), ctl.log()
        probe.send_event(STARTED, episode_id="ep-1")
        probe.spin_for(0.3)
        probe.send_policy_ready(2)
        assert probe.spin_until(
            lambda: probe.last_status().pending_version == 2 and probe.last_status().state == "ready",
            30,
            ctl,
            "v2 loaded and pending",
        )
        ready_at = probe.statuses[-1].wall
        probe.spin_for(1.5)  # mid-episode: v2 is loaded but must not drive
        assert versions_since(0) == {1}
        assert versions_since(ready_at) == {1} and probe.last_status().active_version == 1

        ended_at = probe.executed[-1].wall
        probe.send_event(ENDED, outcome=1, episode_id="ep-1")
        assert probe.spin_until(lambda: probe.last_status().active_version == 2, 10, ctl, "swap to v2")
        status = probe.last_status()
        assert status.engine_backend == "onnxruntime-cpu" and "v2 active" in status.message
        assert probe.spin_until(lambda: abs(probe.commands[-1].value[0] + 0.3) < 1e-6, 20, ctl, "v2 target")
        assert not any(s.value.policy_version == 2 for s in probe.executed if s.wall < ended_at)
        first_v2 = next(s.wall for s in probe.executed if s.value.policy_version == 2)

        probe.send_event(STARTED, episode_id="ep-2")
        probe.send_policy_ready(3)
        assert probe.spin_until(lambda: probe.last_status().state == "rejected", 30, ctl, "v3 rejected")
        message = probe.last_status().message
        assert "v3 rejected" in message and "sha256 mismatch" in message and "keeping v2" in message
        probe.send_event(ENDED, outcome=2, episode_id="ep-2")  # a boundary: still nothing to swap in
        probe.send_policy_ready(9)  # never downloaded: no folder in the cache
        assert probe.spin_until(lambda: "v9 rejected" in probe.last_status().message, 30, ctl, "v9 rejected")
        assert "no manifest.json" in probe.last_status().message
        probe.spin_for(0.5)
        assert probe.last_status().active_version == 2
        assert versions_since(first_v2) == {2}  # once swapped, never back
    assert_safe(probe.command_array())
