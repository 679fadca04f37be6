"""The recorder node over real DDS: episodes round-trip with who acted at each step, a kill -9
mid-episode leaves a labelled recovered episode, spool limits and write errors stop recording
with a clear reason while the node stays up.

The recorder runs as its own process (as on a robot); this test process plays the rest of the
robot (driver, cameras, controller, teleop) with a real rclpy node publishing on the real topics.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.episode_files import stored_image_types

from lwd_protocol.episode import COMPRESSED_IMAGE_TYPE, TOPIC_TYPES, ActionSource, EpisodeTopics, Outcome
from lwd_protocol.episode_io import read_episode
from lwd_protocol.robot_spec import CAMERA_NAMES, JOINT_NAMES

pytestmark = pytest.mark.ros

H, W = 24, 32


def frame(cam_index: int, t: int) -> np.ndarray:
    """A frame unique to (camera, tick) whose content can be checked after a lossy round trip."""
    y, x = np.mgrid[0:H, 0:W]  # smooth ramps (no wrap-around edges) for t < 60
    img = np.stack([x * 4 + t, y * 5 + 40 * cam_index, np.full_like(x, t * 3)], -1)
    return img.astype(np.uint8)


def joint_obs(t: int) -> np.ndarray:
    return np.arange(len(JOINT_NAMES), dtype=np.float64) * 0.01 + t


def action_of(t: int) -> np.ndarray:
    return (np.arange(len(JOINT_NAMES), dtype=np.float32) * -0.5 + t * 0.25).astype(np.float32)


# sources per tick: policy v3, a human takeover, policy v4, a watchdog hold
SCRIPT = [(ActionSource.POLICY, 3)] * 10 + [(ActionSource.HUMAN, 0)] * 7 + [(ActionSource.POLICY, 4)] * 9
SCRIPT += [(ActionSource.HOLD, 0)] * 4


def write_params(path: Path, spool: Path, **overrides) -> Path:
    params = {
        "robot_id": "robot_01",
        "spool_dir": str(spool),
        "start_mode": "request",
        "task": "restocking",
        "chunk_bytes": 16384,
        "flush_period_s": 0.1,
        "status_period_s": 0.2,
        "wait_for_cameras_s": 10.0,
        **overrides,
    }
    path.write_text(yaml.safe_dump({"/**/recorder": {"ros__parameters": params}}))
    return path


def start_recorder(env: dict[str, str], params: Path, log: Path, preexec=None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "lwd_fleet.nodes.recorder_node", "--ros-args", "--params-file", str(params)]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RobotPeer:
    """Driver + cameras + controller + teleop stand-in: publishes what they publish, in tick order."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String

        from lwd_msgs.msg import EpisodeEvent, ExecutedAction
        from lwd_protocol.names import RosTopics

        self.rclpy = rclpy
        rclpy.init()
        self.node = rclpy.create_node(name)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.Image, self.JointState, self.ExecutedAction, self.EpisodeEvent = (
            Image,
            JointState,
            ExecutedAction,
            EpisodeEvent,
        )
        self.image_pubs = {c: self.node.create_publisher(Image, RosTopics.camera_image(c), 5) for c in CAMERA_NAMES}
        self.joint_pub = self.node.create_publisher(JointState, RosTopics.JOINT_STATES, 10)
        self.action_pub = self.node.create_publisher(ExecutedAction, RosTopics.EXECUTED_ACTION, reliable)
        self.event_pub = self.node.create_publisher(EpisodeEvent, RosTopics.EPISODE_EVENT, QoSProfile(depth=50))
        self.events: list = []
        self.status: dict = {}
        self.node.create_subscription(EpisodeEvent, RosTopics.EPISODE_EVENT, self.events.append, QoSProfile(depth=50))
        self.node.create_subscription(String, "recorder/status", self._on_status, 10)

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)

    def spin_until(self, pred, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.rclpy.spin_once(self.node, timeout_sec=0.02)
            if pred():
                return True
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"recorder exited {proc.returncode}: {log.read_text() if log else ''}")
        return pred()

    def stamp(self, t: int):
        from builtin_interfaces.msg import Time

        ns = 1_700_000_000_000_000_000 + t * 33_333_333
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def observe(self, t: int, images: bool = True) -> None:
        stamp = self.stamp(t)
        if images:
            for i, cam in enumerate(CAMERA_NAMES):
                img = frame(i, t)
                msg = self.Image(height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3, data=img.tobytes())
                msg.header.stamp, msg.header.frame_id = stamp, cam
                self.image_pubs[cam].publish(msg)
        names = list(reversed(JOINT_NAMES))  # a driver may order joints its own way: the recorder reorders
        js = self.JointState(name=names, position=joint_obs(t)[::-1].tolist(), velocity=[0.0] * len(names))
        js.header.stamp = stamp
        self.joint_pub.publish(js)

    def act(self, t: int, source: int, version: int) -> None:
        msg = self.ExecutedAction(step=t, source=int(source), policy_version=version, position=action_of(t).tolist())
        msg.header.stamp = self.stamp(t)
        self.action_pub.publish(msg)

    def tick(self, t: int, source: int = 0, version: int = 1, images: bool = True) -> None:
        self.observe(t, images)
        # the observation goes out before the action, as on a robot; DDS does not order across topics,
        # so give it a margin that holds on a loaded 2-core machine
        self.spin_until(lambda: False, 0.05)
        self.act(t, source, version)
        self.spin_until(lambda: False, 0.02)

    def request_start(self, task: str = "", instruction: str = "") -> None:
        self.event_pub.publish(self.EpisodeEvent(event=self.EpisodeEvent.STARTED, task=task, instruction=instruction))

    def end(self, outcome: int) -> None:
        self.event_pub.publish(self.EpisodeEvent(event=self.EpisodeEvent.ENDED, outcome=outcome))

    def started(self) -> list:
        return [e for e in self.events if e.event == self.EpisodeEvent.STARTED and e.episode_id]

    def of_kind(self, kind: int) -> list:
        return [e for e in self.events if e.event == kind]

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown()


@pytest.fixture
def peer(ros_env):
    p = RobotPeer("robot_peer")
    try:
        yield p
    finally:
        p.close()


def _start_episode(peer: RobotPeer, proc, log, task="shoebox", instruction="pack the shoes") -> str:
    assert peer.spin_until(lambda: peer.status.get("state") == "idle", 60, proc, log), peer.status
    peer.observe(0)  # joint states + frames exist before the start, as on a running robot
    peer.request_start(task, instruction)
    assert peer.spin_until(lambda: peer.started(), 20, proc, log), f"no STARTED; status {peer.status}"
    return peer.started()[-1].episode_id


@pytest.mark.parametrize(
    ("compression", "downscale"),
    [(None, 1), ("none", 1), ("jpeg", 2)],
    ids=["default-jpeg", "raw-passthrough", "jpeg-downscaled"],
)
def test_episode_roundtrips_with_action_sources(peer, ros_env, tmp_path, compression, downscale):
    spool = tmp_path / "spool"
    log = tmp_path / "recorder.log"
    overrides = {"image_downscale": downscale}
    if compression is not None:  # None: the node's own default (JPEG), lossy by design
        overrides["image_compression"] = compression
    params = write_params(tmp_path / "p.yaml", spool, **overrides)
    proc = start_recorder(ros_env, params, log)
    try:
        eid = _start_episode(peer, proc, log)
        started = peer.started()[-1]
        assert (started.task, started.instruction, started.robot_id) == ("shoebox", "pack the shoes", "robot_01")
        for t, (source, version) in enumerate(SCRIPT):
            peer.tick(t, source, version)
        # the outcome mark comes after the recorder has taken every step (as an operator's would)
        assert peer.spin_until(lambda: peer.status.get("steps") == len(SCRIPT), 30, proc, log), peer.status
        peer.end(peer.EpisodeEvent.OUTCOME_SUCCESS)
        committed = lambda: peer.of_kind(peer.EpisodeEvent.COMMITTED)  # noqa: E731
        assert peer.spin_until(committed, 20, proc, log), f"no COMMITTED; status {peer.status}"
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()

    event = committed()[-1]
    path = spool / f"{eid}.mcap"
    assert event.episode_id == eid and path.exists() and not list(spool.glob("*.partial"))
    ep = read_episode(path)
    n = len(SCRIPT)
    assert ep.num_steps == n == event.num_steps
    assert ep.start.task == "shoebox" and ep.start.instruction == "pack the shoes" and ep.start.robot_id == "robot_01"
    assert ep.end.outcome is Outcome.SUCCESS and not ep.end.recovered
    assert ep.action_source.tolist() == [int(s) for s, _ in SCRIPT]
    assert ep.policy_version.tolist() == [v for _, v in SCRIPT]
    np.testing.assert_array_equal(ep.action, np.stack([action_of(t) for t in range(n)]))
    np.testing.assert_allclose(ep.joint_position, np.stack([joint_obs(t) for t in range(n)]), rtol=1e-6)
    assert ep.end.num_intervention_steps == 7 == event.num_intervention_steps
    assert ep.end.num_interventions == 1 and ep.end.policy_versions == (3, 4)
    assert ep.stamps_ns.tolist() == [1_700_000_000_000_000_000 + t * 33_333_333 for t in range(n)]
    stored = TOPIC_TYPES[EpisodeTopics.image(CAMERA_NAMES[0])] if compression == "none" else COMPRESSED_IMAGE_TYPE
    assert stored_image_types(path) == {stored}  # the default really is the compressed form
    for i, cam in enumerate(CAMERA_NAMES):
        got = ep.images[cam]
        for t in range(n):
            want = frame(i, t)
            if downscale > 1:  # box filter, computed independently here
                want = want.reshape(H // 2, 2, W // 2, 2, 3).astype(np.float64).mean(axis=(1, 3))
            if compression == "none":
                np.testing.assert_array_equal(got[t], want)
            else:
                assert got[t].shape == want.shape
                assert np.abs(got[t].astype(np.float64) - want).mean() < 6.0, f"{cam}@{t}"


def test_kill_9_mid_episode_leaves_a_labelled_recovered_episode(peer, ros_env, tmp_path):
    spool = tmp_path / "spool"
    log = tmp_path / "recorder.log"
    params = write_params(tmp_path / "p.yaml", spool, image_compression="none")  # exact pixels are checked
    proc = start_recorder(ros_env, params, log)
    try:
        eid = _start_episode(peer, proc, log)
        for t in range(45):
            peer.tick(t, ActionSource.POLICY if t < 30 else ActionSource.HUMAN, 5 if t < 30 else 0)
        assert peer.spin_until(lambda: peer.status.get("steps") == 45, 30, proc, log), peer.status
        time.sleep(0.3)  # a flush period: what the writer had is with the OS
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop(proc)
    partial = spool / f"{eid}.mcap.partial"
    assert partial.exists() and not (spool / f"{eid}.mcap").exists()

    peer.status = {}
    proc = start_recorder(ros_env, params, log)
    try:
        assert peer.spin_until(lambda: peer.status.get("state") == "idle", 60, proc, log)
        status = peer.status
    finally:
        stop(proc)
    assert status["recovered"] == [eid] and status["quarantined"] == []
    assert not partial.exists() and not list(spool.rglob("*.partial")) and not list(spool.rglob("*.crashed"))
    ep = read_episode(spool / f"{eid}.mcap")  # a complete, valid file: the uplink will ship it
    assert ep.end.recovered and ep.end.outcome is Outcome.UNKNOWN and "recovered after a crash" in ep.end.note
    k = ep.num_steps
    assert 0 < k <= 45
    np.testing.assert_array_equal(ep.action, np.stack([action_of(t) for t in range(k)]))
    want_sources = [ActionSource.POLICY if t < 30 else ActionSource.HUMAN for t in range(k)]
    assert ep.action_source.tolist() == [int(s) for s in want_sources]
    assert ep.end.num_intervention_steps == max(0, k - 30)
    for i, cam in enumerate(CAMERA_NAMES):
        np.testing.assert_array_equal(ep.images[cam][k - 1], frame(i, k - 1))


def test_spool_limit_stops_recording_with_a_reason(peer, ros_env, tmp_path):
    spool = tmp_path / "spool"
    log = tmp_path / "recorder.log"
    # each step carries ~7 KB of raw frames (no compression): the limit is hit within the episode
    params = write_params(
        tmp_path / "p.yaml", spool, image_compression="none", max_spool_bytes=120_000, capacity_check_s=0.5
    )
    proc = start_recorder(ros_env, params, log)
    try:
        eid = _start_episode(peer, proc, log)
        t = 0
        while t < 120 and not peer.of_kind(peer.EpisodeEvent.ENDED):
            peer.tick(t)
            t += 1
        assert peer.of_kind(peer.EpisodeEvent.ENDED), f"recorder never stopped; status {peer.status}"
        assert peer.spin_until(lambda: peer.status.get("state") == "disabled", 10, proc, log), peer.status
        assert "spool" in peer.status["reason"] and "max_spool_bytes=120000" in peer.status["reason"]
        peer.request_start()  # refused while the spool is full
        peer.spin_until(lambda: False, 1.5, proc, log)
        assert len(peer.started()) == 1 and peer.status["state"] == "disabled"
        assert proc.poll() is None  # still up, still reporting
    finally:
        stop(proc)
    ep = read_episode(spool / f"{eid}.mcap")
    assert "stopped early: spool limit" in ep.end.note and ep.end.outcome is Outcome.UNKNOWN
    assert 0 < ep.num_steps <= t  # the cut can land on the last tick the test sent before it saw ENDED


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_write_error_stops_recording_and_keeps_the_node_up(peer, ros_env, tmp_path):
    spool = tmp_path / "spool"
    log = tmp_path / "recorder.log"
    # raw frames (~7 KB a step): 60 steps pass the 150 KB file size limit
    params = write_params(tmp_path / "p.yaml", spool, image_compression="none", capacity_check_s=60.0)
    proc = start_recorder(ros_env, params, log, preexec=_limit_file_size(150_000))
    try:
        eid = _start_episode(peer, proc, log)
        for t in range(60):
            peer.tick(t)
        assert peer.spin_until(lambda: peer.status.get("state") == "disabled", 10, proc, log), peer.status
        assert "file size limit reached" in peer.status["last_error"], peer.status
        assert eid in peer.status["last_error"] or str(spool) in peer.status["last_error"]
        assert peer.of_kind(peer.EpisodeEvent.ENDED)[-1].outcome == peer.EpisodeEvent.OUTCOME_UNKNOWN
        assert proc.poll() is None
    finally:
        stop(proc)
    assert (spool / f"{eid}.mcap.partial").exists()  # kept for recovery, never renamed into the spool
    assert not (spool / f"{eid}.mcap").exists()
    assert os.path.getsize(spool / f"{eid}.mcap.partial") <= 150_000


def test_an_unanswered_reset_is_called_again_instead_of_wedging_the_recorder(peer, ros_env, tmp_path):
    """DDS can lose a service answer (seen at fleet start-up: 'failed to send response'); the
    recorder gives up on it after reset_timeout_s and calls again, so the robot keeps recording."""
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.task import Future

    from lwd_msgs.srv import ResetEpisode
    from lwd_protocol.names import RosTopics

    calls: list[ResetEpisode.Request] = []

    async def on_reset(request, response):
        calls.append(request)
        if len(calls) == 1:
            await Future()  # this answer never comes
        response.success, response.task, response.instruction = True, "shoebox", "pack the shoes"
        return response

    # reentrant: the hung first call must not keep the service from taking the second
    peer.node.create_service(ResetEpisode, RosTopics.RESET_EPISODE, on_reset, callback_group=ReentrantCallbackGroup())
    log = tmp_path / "recorder.log"
    params = write_params(tmp_path / "p.yaml", tmp_path / "spool", task="", reset_service=True, reset_timeout_s=1.0)
    proc = start_recorder(ros_env, params, log)
    try:
        assert peer.spin_until(lambda: peer.status.get("state") == "idle", 60, proc, log), peer.status
        peer.observe(0)
        peer.request_start()
        assert peer.spin_until(lambda: peer.started(), 30, proc, log), f"no STARTED; status {peer.status}"
        assert len(calls) == 2 and calls[0].seed == calls[1].seed  # the same scene asked for again
        assert peer.started()[-1].task == "shoebox"
    finally:
        stop(proc)
    assert "episode/reset got no answer in 1 s; calling again" in log.read_text()
