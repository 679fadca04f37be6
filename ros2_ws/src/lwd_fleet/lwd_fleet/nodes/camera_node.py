"""Camera node: the robot's three cameras on the same topics in every backend.

Backends (parameter ``backend``):
- ``v4l2``: one capture thread per camera reads a V4L2 device through OpenCV, stamps each frame
  right after the grab, publishes ``cameras/<cam>/image_raw`` (rgb8) and optionally
  ``.../compressed``. A device that is absent at start-up stops the node with an error naming
  it (``require_all: true``, the default), or is retried every ``reopen_interval_s`` while the
  others run (``require_all: false``); a device that fails later is reopened the same way.
- ``file``: the same with looped video files (lab replay).
- ``pattern``: synthetic frames (bring-up and tests without cameras).
- ``sim``: the sim driver already publishes image_raw; this node subscribes to it and only adds
  the compressed streams and the status, so sim and robot expose one topic set.

Capture threads publish directly (rclpy publishers are thread-safe), so a slow camera never
delays another or the executor. ``cameras/status`` (JSON) reports each camera's state
(ok / missing / stale / error), frame rate and last error once per ``status_period_s``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from lwd_fleet.cameras import BACKENDS, CAMERA_STATUS_TOPIC, CameraConfig, CameraError, compressed_topic, make_source
from lwd_fleet.imaging import compressed_image_fields, image_msg_to_numpy
from lwd_fleet.nodes.spin import run_node
from lwd_protocol.episode_io import IMAGE_FORMATS
from lwd_protocol.names import RosTopics
from lwd_protocol.robot_spec import CAMERA_NAMES


@dataclass(frozen=True)
class CameraNodeConfig:
    backend: str = "v4l2"
    cameras: tuple[str, ...] = CAMERA_NAMES
    devices: dict[str, str] = field(default_factory=dict)
    width: int = 640
    height: int = 480
    fps: float = 30.0
    fourcc: str = "MJPG"
    output_width: int = 224
    output_height: int = 224
    publish_compressed: bool = False
    compressed_format: str = "jpeg"
    jpeg_quality: int = 90
    require_all: bool = True
    reopen_interval_s: float = 2.0
    stale_after_s: float = 0.5
    status_period_s: float = 1.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"camera backend {self.backend!r} not one of {BACKENDS}")
        unknown = [c for c in self.cameras if c not in CAMERA_NAMES]
        if unknown or not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras {list(self.cameras)} must be distinct names from {CAMERA_NAMES}")
        if self.compressed_format not in IMAGE_FORMATS:
            raise ValueError(f"compressed_format {self.compressed_format!r} not one of {IMAGE_FORMATS}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1-100, got {self.jpeg_quality}")
        if self.reopen_interval_s <= 0 or self.stale_after_s <= 0 or self.status_period_s <= 0:
            raise ValueError("reopen_interval_s, stale_after_s and status_period_s must be > 0")

    def camera(self, name: str) -> CameraConfig:
        return CameraConfig(
            name=name,
            device=self.devices.get(name, ""),
            width=self.width,
            height=self.height,
            fps=self.fps,
            fourcc=self.fourcc,
            output_width=self.output_width,
            output_height=self.output_height,
        )


_D = CameraNodeConfig()
# name -> (default, description); plus <camera>.device for each camera (V4L2 device or video file)
PARAMETERS: dict[str, tuple[Any, str]] = {
    "backend": (_D.backend, "v4l2 | file | pattern | sim (sim: the sim driver publishes image_raw)"),
    "cameras": (list(_D.cameras), "cameras this node serves"),
    "width": (_D.width, "capture width requested from the device"),
    "height": (_D.height, "capture height requested from the device"),
    "fps": (_D.fps, "capture rate requested from the device (and pacing of file/pattern)"),
    "fourcc": (_D.fourcc, "V4L2 pixel format, e.g. MJPG or YUYV ('' = driver default)"),
    "output_width": (_D.output_width, "published width (0 = as captured)"),
    "output_height": (_D.output_height, "published height (0 = as captured)"),
    "publish_compressed": (_D.publish_compressed, "also publish image_raw/compressed"),
    "compressed_format": (_D.compressed_format, "jpeg | png"),
    "jpeg_quality": (_D.jpeg_quality, "JPEG quality 1-100"),
    "require_all": (_D.require_all, "refuse to start when a camera device is absent"),
    "reopen_interval_s": (_D.reopen_interval_s, "retry period for an absent or failed device"),
    "stale_after_s": (_D.stale_after_s, "status reports a camera stale after this long without frames"),
    "status_period_s": (_D.status_period_s, "period of cameras/status"),
}
DEVICE_PARAMETERS = tuple(f"{cam}.device" for cam in CAMERA_NAMES)


@dataclass
class CameraHealth:
    """Per-camera counters; written by one thread (capture or executor), read by the status timer."""

    state: str = "missing"  # missing | ok | error (stale is derived from last_frame_mono)
    source: str = ""
    frames: int = 0
    failures: int = 0
    last_frame_mono: float = 0.0
    error: str = ""
    frames_at_last_status: int = 0


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("cameras")
        self.cfg = self._read_parameters()
        self.health = {c: CameraHealth() for c in self.cfg.cameras}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_status = time.monotonic()
        sensor_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.raw_pubs = {}
        if self.cfg.backend != "sim":
            self.raw_pubs = {
                c: self.create_publisher(Image, RosTopics.camera_image(c), sensor_qos) for c in self.cfg.cameras
            }
        self.compressed_pubs = {}
        if self.cfg.publish_compressed:
            self.compressed_pubs = {
                c: self.create_publisher(CompressedImage, compressed_topic(c), sensor_qos) for c in self.cfg.cameras
            }
        self.status_pub = self.create_publisher(String, CAMERA_STATUS_TOPIC, 10)
        self.create_timer(self.cfg.status_period_s, self._publish_status)

        if self.cfg.backend == "sim":
            for cam in self.cfg.cameras:
                self.health[cam].source = f"sim driver ({RosTopics.camera_image(cam)})"
                self.create_subscription(Image, RosTopics.camera_image(cam), self._sim_callback(cam), sensor_qos)
        else:
            self._open_all()
        sources = ", ".join(f"{c}=[{self.health[c].source}]" for c in self.cfg.cameras)
        self.get_logger().info(
            f"cameras: backend={self.cfg.backend} {sources}"
            f" compressed={'on ' + self.cfg.compressed_format if self.cfg.publish_compressed else 'off'}"
        )

    # --- parameters ---------------------------------------------------------------------------
    def _read_parameters(self) -> CameraNodeConfig:
        values = {
            name: self.declare_parameter(name, default, _desc(text)).value
            for name, (default, text) in PARAMETERS.items()
        }
        cameras = tuple(values.pop("cameras"))
        devices = {}
        for cam in CAMERA_NAMES:
            devices[cam] = str(
                self.declare_parameter(f"{cam}.device", "", _desc(f"{cam}: V4L2 device or video file")).value
            )
        return CameraNodeConfig(cameras=cameras, devices=devices, **values)

    # --- capture backends -----------------------------------------------------------------------
    def _open_all(self) -> None:
        sources = {}
        errors = []
        for cam in self.cfg.cameras:
            source = make_source(self.cfg.backend, self.cfg.camera(cam))
            try:
                source.open()
                self.health[cam].source, self.health[cam].state = source.description, "ok"
            except CameraError as exc:
                errors.append(str(exc))
                self.health[cam].error, self.health[cam].state = str(exc), "missing"
                self.health[cam].source = f"{self.cfg.backend} {self.cfg.devices.get(cam) or '(no device)'}"
            sources[cam] = source
        if errors and self.cfg.require_all:
            for source in sources.values():
                source.close()
            raise CameraError("; ".join(errors) + " (set require_all: false to run with the cameras that exist)")
        for error in errors:
            self.get_logger().error(f"{error}; retrying every {self.cfg.reopen_interval_s:.1f} s")
        for cam, source in sources.items():
            t = threading.Thread(target=self._capture_loop, args=(cam, source), name=f"camera-{cam}", daemon=True)
            t.start()
            self._threads.append(t)

    def _capture_loop(self, cam: str, source) -> None:
        health = self.health[cam]
        raw_pub, comp_pub = self.raw_pubs[cam], self.compressed_pubs.get(cam)
        while not self._stop.is_set():
            if health.state != "ok":
                if self._stop.wait(self.cfg.reopen_interval_s):
                    break
                try:
                    source.close()
                    source.open()
                    health.state, health.error, health.source = "ok", "", source.description
                    self.get_logger().info(f"camera {cam}: opened {source.description}")
                except CameraError as exc:
                    if str(exc) != health.error:
                        self.get_logger().error(str(exc))
                    health.error = str(exc)
                continue
            try:
                if not source.grab():
                    raise CameraError(f"camera {cam}: no frame from {source.description}")
                stamp = self.get_clock().now().to_msg()
                rgb = source.retrieve()
            except CameraError as exc:
                health.state, health.error = "error", str(exc)
                health.failures += 1
                self.get_logger().error(f"{exc}; reopening in {self.cfg.reopen_interval_s:.1f} s")
                continue
            msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3)
            msg.header.stamp, msg.header.frame_id = stamp, cam
            msg.data = rgb.tobytes()
            try:
                raw_pub.publish(msg)
                if comp_pub is not None:
                    self._publish_compressed(comp_pub, rgb, msg.header)
            except Exception:  # the context went away under us (SIGINT/SIGTERM): stop quietly
                if self._stop.is_set() or not self.context.ok():
                    break
                raise
            health.frames += 1
            health.last_frame_mono = time.monotonic()
        source.close()

    # --- sim backend ------------------------------------------------------------------------------
    def _sim_callback(self, cam: str):
        health, comp_pub = self.health[cam], self.compressed_pubs.get(cam)

        def on_image(msg: Image) -> None:
            health.frames += 1
            health.last_frame_mono = time.monotonic()
            health.state = "ok"
            if comp_pub is not None:
                self._publish_compressed(comp_pub, image_msg_to_numpy(msg, "rgb8", copy=False), msg.header)

        return on_image

    def _publish_compressed(self, pub, rgb, header) -> None:
        fields = compressed_image_fields(rgb, self.cfg.compressed_format, self.cfg.jpeg_quality)
        pub.publish(CompressedImage(header=header, **fields))

    # --- status ----------------------------------------------------------------------------------
    def camera_states(self) -> dict[str, dict]:
        now = time.monotonic()
        period = max(now - self._last_status, 1e-3)
        out = {}
        for cam, h in self.health.items():
            state = h.state
            age = now - h.last_frame_mono if h.frames else None
            if state == "ok" and (age is None or age > self.cfg.stale_after_s):
                state = "stale" if h.frames else "missing"
            out[cam] = {
                "state": state,
                "source": h.source,
                "frames": h.frames,
                "fps": round((h.frames - h.frames_at_last_status) / period, 2),
                "age_s": None if age is None else round(age, 3),
                "failures": h.failures,
                "error": h.error,
            }
            h.frames_at_last_status = h.frames
        self._last_status = now
        return out

    def _publish_status(self) -> None:
        states = self.camera_states()
        self.status_pub.publish(String(data=json.dumps({"backend": self.cfg.backend, "cameras": states})))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)


def _desc(text: str):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=text)


def main(args: list[str] | None = None) -> None:
    run_node(CameraNode, lambda node: node.stop(), args, config_errors=(CameraError, ValueError))


__all__ = ["CameraNode", "CameraNodeConfig", "main"]

if __name__ == "__main__":
    main()
