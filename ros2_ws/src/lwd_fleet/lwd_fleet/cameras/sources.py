"""Frame sources behind one interface: V4L2 (OpenCV), a video file (OpenCV), a test pattern.

A source is opened once, then ``grab()`` blocks until the next frame exists (the device paces
V4L2; files and patterns are paced to ``fps``) and ``retrieve()`` returns it as (H, W, 3) uint8
RGB at the configured output size. The caller stamps between the two calls, which is as close
to exposure as OpenCV lets us get. Opening fails with CameraError naming the camera and what is
wrong (no device node, OpenCV missing, device busy), never with a bare OpenCV warning.

- ``v4l2``: a real camera. ``device`` is a /dev path (udev by-id/by-path links are resolved);
  width/height/fps/fourcc are requested and the values the driver accepted are reported.
- ``file``: any video OpenCV can read, looped (replay recorded footage on a lab machine).
- ``pattern``: a moving synthetic pattern whose first pixel row encodes the frame counter;
  for bring-up without cameras and for tests and benchmarks. Never use it on a robot.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

BACKENDS = ("v4l2", "file", "pattern", "sim")
_VIDEO_NODE = re.compile(r"^/dev/video(\d+)$")


class CameraError(RuntimeError):
    """A camera that cannot be opened or read; the message names the camera and the cause."""


@dataclass(frozen=True)
class CameraConfig:
    """One camera. width/height/fps/fourcc are requests to the device; output_* is what we publish."""

    name: str
    device: str = ""
    width: int = 640
    height: int = 480
    fps: float = 30.0
    fourcc: str = "MJPG"  # most USB cameras deliver 30 Hz at 640x480 only as MJPG
    output_width: int = 0  # 0 = as captured
    output_height: int = 0

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"camera {self.name}: fps must be > 0, got {self.fps}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera {self.name}: width/height must be > 0, got {self.width}x{self.height}")
        if (self.output_width > 0) != (self.output_height > 0) or self.output_width < 0 or self.output_height < 0:
            raise ValueError(
                f"camera {self.name}: set both output_width and output_height (> 0) or neither, "
                f"got {self.output_width}x{self.output_height}"
            )
        if self.fourcc and len(self.fourcc) != 4:
            raise ValueError(f"camera {self.name}: fourcc must be 4 characters, got {self.fourcc!r}")

    @property
    def output_size(self) -> tuple[int, int] | None:
        return (self.output_width, self.output_height) if self.output_width > 0 else None


class FrameSource(Protocol):
    config: CameraConfig
    description: str  # what was actually opened, for the log

    def open(self) -> None: ...

    def grab(self) -> bool: ...

    def retrieve(self) -> np.ndarray: ...

    def close(self) -> None: ...


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise CameraError("the v4l2 and file camera backends need OpenCV: pip install opencv-python-headless") from exc
    return cv2


def _resize(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    cv2 = _cv2()
    shrinking = size[0] < rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class OpenCvSource:
    """A V4L2 device or a looped video file read through OpenCV."""

    def __init__(self, config: CameraConfig, kind: str = "v4l2") -> None:
        if kind not in ("v4l2", "file"):
            raise ValueError(f"OpenCvSource kind must be 'v4l2' or 'file', got {kind!r}")
        self.config, self.kind = config, kind
        self.description = f"{kind} {config.device} (not open)"
        self._cap: Any = None
        self._period = 1.0 / config.fps
        self._next = 0.0

    def open(self) -> None:
        cfg = self.config
        if not cfg.device:
            raise CameraError(f"camera {cfg.name}: no device configured (parameter {cfg.name}.device)")
        if not os.path.exists(cfg.device):
            what = "V4L2 device" if self.kind == "v4l2" else "video file"
            raise CameraError(f"camera {cfg.name}: {what} {cfg.device} does not exist")
        cv2 = _cv2()
        if self.kind == "v4l2":
            real = os.path.realpath(cfg.device)
            m = _VIDEO_NODE.match(real)
            # OpenCV's V4L2 backend opens /dev/videoN by index; udev links resolve to that node
            cap = cv2.VideoCapture(int(m.group(1)) if m else real, cv2.CAP_V4L2)
            if not cap.isOpened():
                cap.release()
                raise CameraError(
                    f"camera {cfg.name}: could not open V4L2 device {cfg.device} ({real}): busy or not a capture device"
                )
            if cfg.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        else:
            cap = cv2.VideoCapture(cfg.device)
            if not cap.isOpened():
                cap.release()
                raise CameraError(f"camera {cfg.name}: OpenCV cannot read video file {cfg.device}")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.description = f"{self.kind} {cfg.device}: {w}x{h} @ {fps:.1f} fps"
        if self.kind == "v4l2" and (w, h) != (cfg.width, cfg.height):
            self.description += f" (asked {cfg.width}x{cfg.height})"
        self._cap, self._next = cap, time.monotonic()

    def grab(self) -> bool:
        if self._cap is None:
            raise CameraError(f"camera {self.config.name}: grab() before open()")
        if self.kind == "file":  # a file has no clock of its own: pace it
            _sleep_until(self._next)
            self._next = max(self._next + self._period, time.monotonic() - self._period)
            if not self._cap.grab():  # end of file: loop
                self._cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
                return bool(self._cap.grab())
            return True
        return bool(self._cap.grab())

    def retrieve(self) -> np.ndarray:
        ok, bgr = self._cap.retrieve()
        if not ok or bgr is None:
            raise CameraError(f"camera {self.config.name}: could not decode a frame from {self.config.device}")
        if bgr.ndim == 2:
            bgr = np.repeat(bgr[:, :, None], 3, axis=2)
        rgb = np.ascontiguousarray(bgr[:, :, 2::-1])
        return _resize(rgb, self.config.output_size)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class PatternSource:
    """Synthetic frames paced to fps: a diagonal gradient that moves one pixel per frame.

    Row 0 encodes the frame counter as little-endian bytes in the red channel of pixels 0..3, so
    a consumer can tell frames apart and count drops.
    """

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        w, h = config.output_size or (config.width, config.height)
        self.description = f"pattern {w}x{h} @ {config.fps:.1f} fps"
        self._shape = (h, w)
        self._period = 1.0 / config.fps
        self._next = 0.0
        self.frame_index = -1
        y, x = np.mgrid[0:h, 0:w]
        self._base = (x + y).astype(np.int64)
        self._offset = sum(ord(c) for c in config.name) % 256  # cameras look different

    def open(self) -> None:
        self._next = time.monotonic()
        self.frame_index = -1

    def grab(self) -> bool:
        _sleep_until(self._next)
        self._next = max(self._next + self._period, time.monotonic() - self._period)
        self.frame_index += 1
        return True

    def retrieve(self) -> np.ndarray:
        return pattern_frame(self._base, self.frame_index, self._offset)

    def close(self) -> None:
        pass


def pattern_frame(base: np.ndarray, index: int, offset: int) -> np.ndarray:
    v = (base + index + offset) % 256
    img = np.stack([v, (v * 2) % 256, 255 - v], axis=-1).astype(np.uint8)
    if img.shape[1] >= 4:
        img[0, :4, 0] = np.frombuffer(int(index % 2**32).to_bytes(4, "little"), np.uint8)
    return img


def pattern_frame_index(rgb: np.ndarray) -> int:
    """Inverse of the counter encoding in PatternSource frames."""
    return int.from_bytes(bytes(rgb[0, :4, 0]), "little")


def make_source(backend: str, config: CameraConfig) -> FrameSource:
    if backend in ("v4l2", "file"):
        return OpenCvSource(config, backend)
    if backend == "pattern":
        return PatternSource(config)
    raise ValueError(f"camera backend {backend!r} captures nothing itself; capture backends: v4l2, file, pattern")


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
