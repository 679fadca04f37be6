"""sensor_msgs/Image <-> numpy without requiring cv_bridge.

cv_bridge is not on PyPI for ROS 2 (and the PyPI ``cv-bridge`` is a ROS 1 port that breaks on
numpy 2), so robots installed from the ROS apt repositories have it and pip-installed
environments do not. ``image_msg_to_numpy`` works on anything with height/width/encoding/step/
data -- rclpy messages (data is ``array('B')``), mcap-decoded messages (bytes), plain objects --
validates the fields first (clear errors for unsupported encodings and wrong sizes), then uses
the real cv_bridge when importable and falls back to an exact numpy path otherwise.

Rows may be padded (``step > width * channels``); the padding is dropped. Colour images come
back as (H, W, C) uint8, mono8 as (H, W), like cv_bridge. Set LWD_NO_CV_BRIDGE=1 to force the
numpy path.

sensor_msgs/CompressedImage uses the image_transport "compressed" convention for ``format``
("rgb8; jpeg compressed bgr8"), so rqt and image_transport republishers decode our streams; the
codec itself (OpenCV, else Pillow) is the one episode files use (lwd_protocol.episode_io), and
decoding trusts the JPEG/PNG magic bytes rather than the format string.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from lwd_protocol.episode_io import IMAGE_FORMATS, decode_image, encode_image

CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
TARGETS = ("passthrough", "rgb8", "bgr8")


class ImageConversionError(ValueError):
    """Unsupported encoding or fields inconsistent with the data."""


@functools.cache
def _cv_bridge() -> Any | None:
    if os.environ.get("LWD_NO_CV_BRIDGE"):
        return None
    try:
        from cv_bridge import CvBridge  # type: ignore[import-not-found]

        return CvBridge()
    except Exception:  # not installed, or the broken ROS 1 port on numpy 2
        return None


def image_msg_to_numpy(msg: Any, desired_encoding: str = "passthrough", copy: bool = True) -> np.ndarray:
    """Image message -> uint8 array. ``desired_encoding``: passthrough | rgb8 | bgr8.

    ``copy=False`` may return a read-only view of the message buffer (faster; do not keep it
    after the message is reused).
    """
    if desired_encoding not in TARGETS:
        raise ImageConversionError(f"desired_encoding {desired_encoding!r} not supported; use one of {TARGETS}")
    h, w, enc, step, data = _fields(msg)
    c = CHANNELS[enc]
    img = _via_cv_bridge(msg, h, w, c) if _cv_bridge() is not None else None
    if img is None:
        img = _via_numpy(data, h, w, c, step)
    img = _convert(img, enc, desired_encoding)
    return np.array(img, copy=True) if copy else img


def numpy_to_image_fields(array: np.ndarray, encoding: str | None = None, step: int | None = None) -> dict[str, Any]:
    """uint8 array -> Image fields: ``Image(header=..., **numpy_to_image_fields(img, "rgb8"))``.

    encoding defaults to mono8 for (H, W), rgb8 for (H, W, 3), rgba8 for (H, W, 4). ``step``
    larger than width*channels pads each row with zeros (for consumers that want aligned rows).
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ImageConversionError(f"image must be uint8, got {arr.dtype} (scale/convert it explicitly)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3):
        raise ImageConversionError(f"image must be (H, W) or (H, W, C), got shape {arr.shape}")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if encoding is None:
        encoding = {1: "mono8", 3: "rgb8", 4: "rgba8"}.get(channels)
        if encoding is None:
            raise ImageConversionError(f"no default encoding for {channels} channels")
    if encoding not in CHANNELS:
        raise ImageConversionError(f"unsupported encoding {encoding!r}; supported: {sorted(CHANNELS)}")
    if CHANNELS[encoding] != channels:
        raise ImageConversionError(f"{encoding} needs {CHANNELS[encoding]} channels, array has {channels}")
    h, w = arr.shape[:2]
    row = w * channels
    step = row if step is None else int(step)
    if step < row:
        raise ImageConversionError(f"step {step} < width * channels = {row}")
    rows = np.ascontiguousarray(arr).reshape(h, row)
    if step > row:
        rows = np.concatenate([rows, np.zeros((h, step - row), np.uint8)], axis=1)
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0, "step": step, "data": rows.tobytes()}


def compressed_image_fields(rgb: np.ndarray, image_format: str = "jpeg", quality: int = 90) -> dict[str, Any]:
    """(H, W, 3) uint8 RGB -> CompressedImage fields: ``CompressedImage(header=..., **fields)``."""
    if image_format not in IMAGE_FORMATS:
        raise ImageConversionError(f"compressed format {image_format!r} not one of {IMAGE_FORMATS}")
    try:
        data = encode_image(np.asarray(rgb), image_format, quality)
    except ValueError as exc:
        raise ImageConversionError(str(exc)) from exc
    return {"format": f"rgb8; {image_format} compressed bgr8", "data": data}


def compressed_msg_to_numpy(msg: Any) -> np.ndarray:
    """CompressedImage (JPEG or PNG, any format string) -> (H, W, 3) uint8 RGB."""
    try:
        data = bytes(msg.data)
    except AttributeError as exc:
        raise ImageConversionError(f"not a CompressedImage (needs data): {exc}") from exc
    try:
        return decode_image(data)
    except ValueError as exc:
        raise ImageConversionError(f"CompressedImage format {getattr(msg, 'format', '?')!r}: {exc}") from exc


def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink by an integer factor with a box filter (mean of each factor x factor block, rounded).

    Exact and dependency-free; rows/columns that do not fill a whole block are cropped. Box
    averaging is what INTER_AREA does for integer factors, so training frames stay comparable.
    """
    if int(factor) != factor or factor < 1:
        raise ImageConversionError(f"downscale factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ImageConversionError(f"downscale needs a uint8 (H, W[, C]) image, got {img.dtype} {img.shape}")
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    if h == 0 or w == 0:
        raise ImageConversionError(f"image {img.shape[:2]} is smaller than the downscale factor {factor}")
    blocks = img[: h * factor, : w * factor].reshape(h, factor, w, factor, *img.shape[2:])
    summed = blocks.sum(axis=(1, 3), dtype=np.uint32)
    return ((summed + factor * factor // 2) // (factor * factor)).astype(np.uint8)


# ---------------------------------------------------------------------------- helpers
def _fields(msg: Any) -> tuple[int, int, str, int, Any]:
    try:
        h, w, enc, step, data = int(msg.height), int(msg.width), str(msg.encoding), int(msg.step), msg.data
    except AttributeError as exc:
        raise ImageConversionError(f"not an image message (needs height/width/encoding/step/data): {exc}") from exc
    if enc not in CHANNELS:
        raise ImageConversionError(f"unsupported encoding {enc!r}; supported: {sorted(CHANNELS)}")
    if h < 0 or w < 0:
        raise ImageConversionError(f"negative image size {h}x{w}")
    row = w * CHANNELS[enc]
    if step < row:
        raise ImageConversionError(f"step {step} < width * channels = {row} for {w}x{h} {enc}")
    n = _nbytes(data)
    # ROS says len(data) == step * height; a few producers leave the last row unpadded
    minimum = 0 if h == 0 else (h - 1) * step + row
    if not minimum <= n <= step * h:
        raise ImageConversionError(f"data has {n} bytes; {w}x{h} {enc} with step {step} needs {step * h}")
    return h, w, enc, step, data


def _nbytes(data: Any) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return len(data)


def _via_numpy(data: Any, h: int, w: int, c: int, step: int) -> np.ndarray:
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a list of ints (some decoders)
        buf = np.asarray(data, dtype=np.uint8)
    row = w * c
    if h == 0 or row == 0:
        rows = np.zeros((h, row), np.uint8)
    elif buf.size == h * step:
        rows = buf.reshape(h, step)[:, :row]
    else:  # unpadded last row: a strided view, bounds checked in _fields
        rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1), writeable=False)
    return rows.reshape(h, w) if c == 1 else rows.reshape(h, w, c)


def _via_cv_bridge(msg: Any, h: int, w: int, c: int) -> np.ndarray | None:
    try:
        img = np.asarray(_cv_bridge().imgmsg_to_cv2(msg, desired_encoding="passthrough"))
    except Exception:  # duck-typed message it cannot read, broken install: the numpy path is exact
        return None
    expected = (h, w) if c == 1 else (h, w, c)
    return img if img.shape == expected and img.dtype == np.uint8 else None


def _convert(img: np.ndarray, enc: str, target: str) -> np.ndarray:
    if target == "passthrough" or target == enc:
        return img
    if enc == "mono8":
        return np.repeat(img[:, :, None], 3, axis=2)
    rgb = img[:, :, :3] if enc.startswith("rgb") else img[:, :, 2::-1]
    return rgb if target == "rgb8" else rgb[:, :, ::-1]
