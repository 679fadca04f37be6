"""Camera capture: OpenCV sources deliver RGB at the configured size, an absent V4L2 device
stops the node with an error naming it, and the controller's synchroniser (fed over real DDS by
the real camera node, and by the sim driver + camera node in sim) flags missing and stale cameras.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lwd_fleet.cameras import CameraConfig, CameraError, OpenCvSource, PatternSource
from lwd_fleet.cameras.sources import pattern_frame_index
from lwd_fleet.control.camera_sync import CameraSynchronizer, SyncConfig
from lwd_protocol.robot_spec import CAMERA_NAMES

cv2 = pytest.importorskip("cv2")


def write_video(path: Path, rgb: tuple[int, int, int], frames: int = 20, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    assert writer.isOpened()
    for _ in range(frames):
        writer.write(np.full((size[1], size[0], 3), rgb[::-1], np.uint8))  # OpenCV writes BGR
    writer.release()
    return path


# --------------------------------------------------------------------------------- sources
def test_file_source_gives_rgb_at_output_size_and_loops(tmp_path):
    video = write_video(tmp_path / "red.avi", (230, 20, 10), frames=3)
    src = OpenCvSource(CameraConfig("head", str(video), fps=200.0, output_width=16, output_height=12), "file")
    src.open()
    try:
        for _ in range(7):  # past the end of the 3-frame file
            assert src.grab()
            img = src.retrieve()
            assert img.shape == (12, 16, 3) and img.dtype == np.uint8
            np.testing.assert_allclose(img.reshape(-1, 3).mean(0), (230, 20, 10), atol=6)
    finally:
        src.close()
    assert "64x48" in src.description


def test_absent_devices_and_missing_opencv_are_named(tmp_path):
    with pytest.raises(CameraError, match=r"camera left_wrist: V4L2 device /dev/video_lwd_absent does not exist"):
        OpenCvSource(CameraConfig("left_wrist", "/dev/video_lwd_absent"), "v4l2").open()
    with pytest.raises(CameraError, match=r"no device configured \(parameter head.device\)"):
        OpenCvSource(CameraConfig("head"), "v4l2").open()
    not_video = tmp_path / "notes.txt"
    not_video.write_text("hello")
    with pytest.raises(CameraError, match="OpenCV cannot read video file"):
        OpenCvSource(CameraConfig("head", str(not_video)), "file").open()
    with pytest.raises(ValueError, match="set both output_width and output_height"):
        CameraConfig("head", output_width=10)


def test_pattern_source_is_paced_and_counts_frames():
    src = PatternSource(CameraConfig("head", fps=100.0, width=32, height=8))
    src.open()
    t0 = time.monotonic()
    indices = []
    for _ in range(10):
        src.grab()
        indices.append(pattern_frame_index(src.retrieve()))
    assert indices == list(range(10))
    assert time.monotonic() - t0 >= 0.08  # 10 frames at 100 fps: at least 9 periods


# --------------------------------------------------------------------------------- over DDS
def _camera_node(env, tmp_path: Path, *params: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"cameras-{time.monotonic_ns()}.log"
    argv = [sys.executable, "-m", "lwd_fleet.nodes.camera_node", "--ros-args"]
    for p in params:
        argv += ["-p", p]
    out = open(log, "wb")  # closed with the process
    return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT), log


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SyncProbe:
    """What the controller does with camera topics: feed a CameraSynchronizer by header stamp."""

    def __init__(self, name: str, use_sim_time: bool = False) -> None:
        import rclpy
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        from lwd_fleet.cameras import CAMERA_STATUS_TOPIC, compressed_topic
        from lwd_protocol.names import RosTopics

        self.rclpy = rclpy
        rclpy.init()
        # in sim every stamp is simulated time (/clock), so the probe's clock must follow it too
        self.node = rclpy.create_node(name, parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)])
        self.sync = CameraSynchronizer(SyncConfig(max_spread_s=0.05, max_age_s=0.3))
        self.compressed: dict[str, object] = {}
        self.status: dict = {}
        for cam in CAMERA_NAMES:
            self.node.create_subscription(Image, RosTopics.camera_image(cam), self._on_image(cam), 5)
            self.node.create_subscription(
                CompressedImage, compressed_topic(cam), lambda m, c=cam: self.compressed.__setitem__(c, m), 5
            )
        self.node.create_subscription(String, CAMERA_STATUS_TOPIC, self._on_status, 10)

    def _on_image(self, cam: str):
        def cb(msg) -> None:
            self.sync.add(cam, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg)

        return cb

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def spin_until(self, pred, timeout_s: float, proc=None, log=None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.rclpy.spin_once(self.node, timeout_sec=0.02)
            if pred():
                return True
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"node exited {proc.returncode}: {log.read_text() if log else ''}")
        return pred()

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown()


@pytest.fixture
def probe(ros_env, request):
    p = SyncProbe("camera_probe", use_sim_time="sim_driver" in request.node.name)
    try:
        yield p
    finally:
        p.close()


@pytest.mark.ros
def test_absent_v4l2_device_stops_the_node_with_a_clear_error(ros_env, tmp_path):
    proc, log = _camera_node(ros_env, tmp_path, "backend:=v4l2", "head.device:=/dev/video_lwd_absent")
    assert proc.wait(timeout=60) == 2
    text = log.read_text()
    assert "camera head: V4L2 device /dev/video_lwd_absent does not exist" in text
    assert "set require_all: false" in text


@pytest.mark.ros
def test_sync_flags_the_missing_then_stale_cameras_of_the_real_camera_node(probe, ros_env, tmp_path):
    head = write_video(tmp_path / "head.avi", (200, 30, 30))
    left = write_video(tmp_path / "left.avi", (30, 200, 30))
    proc, log = _camera_node(
        ros_env,
        tmp_path,
        "backend:=file",
        f"head.device:={head}",
        f"left_wrist.device:={left}",
        "right_wrist.device:=/dev/video_lwd_absent",
        "require_all:=false",
        "output_width:=32",
        "output_height:=24",
        "publish_compressed:=true",
        "status_period_s:=0.3",
    )
    try:
        assert probe.spin_until(
            lambda: (
                probe.status.get("cameras", {}).get("head", {}).get("state") == "ok"
                and {"head", "left_wrist"} <= set(probe.compressed)
            ),
            60,
            proc,
            log,
        ), probe.status
        probe.spin_until(lambda: False, 0.3)
        result = probe.sync.latest(probe.now())
        assert not result.ok and result.missing == ("right_wrist",) and result.stale == ()
        assert "missing right_wrist" in result.reason
        right = probe.status["cameras"]["right_wrist"]
        assert right["state"] == "missing" and "/dev/video_lwd_absent does not exist" in right["error"]
        assert probe.status["cameras"]["left_wrist"]["fps"] > 5
        from lwd_fleet.imaging import compressed_msg_to_numpy

        jpeg = compressed_msg_to_numpy(probe.compressed["left_wrist"])
        assert jpeg.shape == (24, 32, 3)
        np.testing.assert_allclose(jpeg.reshape(-1, 3).mean(0), (30, 200, 30), atol=12)
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()
    probe.spin_until(lambda: False, 0.5)
    result = probe.sync.latest(probe.now())
    assert not result.ok and set(result.stale) == {"head", "left_wrist"} and result.missing == ("right_wrist",)


@pytest.mark.ros
def test_sim_driver_and_sim_backend_give_the_robot_topic_set(probe, ros_env, tmp_path):
    pytest.importorskip("lwd_sim")
    env = dict(ros_env, MUJOCO_GL=ros_env.get("MUJOCO_GL", "egl"))
    driver_log = tmp_path / "driver.log"
    with open(driver_log, "wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "lwd_fleet.drivers.sim_driver", "--ros-args", "-p", "image_size:=64"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc, log = _camera_node(env, tmp_path, "backend:=sim", "publish_compressed:=true", "status_period_s:=0.3")
    try:
        assert probe.spin_until(
            lambda: set(probe.compressed) == set(CAMERA_NAMES) and probe.sync.latest(probe.now()).ok, 90, proc, log
        ), f"status {probe.status}; driver: {driver_log.read_text()[-2000:]}"

        def all_ok() -> bool:
            cams = probe.status.get("cameras", {})
            return probe.status.get("backend") == "sim" and [cams.get(c, {}).get("state") for c in CAMERA_NAMES] == [
                "ok"
            ] * len(CAMERA_NAMES)

        assert probe.spin_until(all_ok, 20, proc, log), probe.status
        from lwd_fleet.imaging import compressed_msg_to_numpy

        assert compressed_msg_to_numpy(probe.compressed["head"]).shape == (64, 64, 3)
    finally:
        _stop(proc)
        _stop(driver)
    assert proc.returncode == 0, log.read_text()
