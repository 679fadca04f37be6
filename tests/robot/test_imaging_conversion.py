"""Image <-> numpy without cv_bridge: every encoding, padded rows, duck-typed and rclpy messages."""

from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import pytest

from lwd_fleet.imaging import ImageConversionError, image_msg_to_numpy, numpy_to_image_fields

RNG = np.random.default_rng(3)


def random_image(h: int, w: int, c: int) -> np.ndarray:
    shape = (h, w) if c == 1 else (h, w, c)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(("encoding", "c"), [("rgb8", 3), ("bgr8", 3), ("mono8", 1), ("rgba8", 4), ("bgra8", 4)])
@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("container", [bytes, bytearray, lambda b: array.array("B", b), list])
def test_roundtrip_with_padding(encoding: str, c: int, pad: int, container: object) -> None:
    img = random_image(5, 7, c)
    fields = numpy_to_image_fields(img, encoding, step=7 * c + pad)
    assert fields["step"] == 7 * c + pad and len(fields["data"]) == fields["step"] * 5
    msg = SimpleNamespace(**{**fields, "data": container(fields["data"])})
    out = image_msg_to_numpy(msg)
    assert out.dtype == np.uint8 and out.flags.writeable and out.flags.c_contiguous
    np.testing.assert_array_equal(out, img)


def test_padding_bytes_are_dropped_not_read_as_pixels() -> None:
    # 2x2 rgb8, step 8: each row = 6 pixel bytes + 2 junk bytes (0xEE)
    data = bytes([1, 2, 3, 4, 5, 6, 0xEE, 0xEE, 7, 8, 9, 10, 11, 12, 0xEE, 0xEE])
    msg = SimpleNamespace(height=2, width=2, encoding="rgb8", step=8, data=data)
    expected = np.arange(1, 13, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(image_msg_to_numpy(msg), expected)
    short_last_row = SimpleNamespace(height=2, width=2, encoding="rgb8", step=8, data=data[:-2])
    np.testing.assert_array_equal(image_msg_to_numpy(short_last_row), expected)


def test_colour_conversion_targets() -> None:
    rgb = random_image(3, 4, 3)
    bgr_msg = SimpleNamespace(**numpy_to_image_fields(rgb[:, :, ::-1].copy(), "bgr8"))
    np.testing.assert_array_equal(image_msg_to_numpy(bgr_msg, "rgb8"), rgb)
    np.testing.assert_array_equal(image_msg_to_numpy(bgr_msg, "bgr8"), rgb[:, :, ::-1])
    rgba = np.concatenate([rgb, np.full((3, 4, 1), 255, np.uint8)], axis=2)
    rgba_msg = SimpleNamespace(**numpy_to_image_fields(rgba, "rgba8"))
    np.testing.assert_array_equal(image_msg_to_numpy(rgba_msg, "rgb8"), rgb)
    bgra_msg = SimpleNamespace(**numpy_to_image_fields(rgba[:, :, [2, 1, 0, 3]].copy(), "bgra8"))
    np.testing.assert_array_equal(image_msg_to_numpy(bgra_msg, "rgb8"), rgb)
    mono = random_image(3, 4, 1)
    mono_msg = SimpleNamespace(**numpy_to_image_fields(mono))
    assert mono_msg.encoding == "mono8"
    np.testing.assert_array_equal(image_msg_to_numpy(mono_msg, "rgb8"), np.stack([mono] * 3, axis=2))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"encoding": "yuv422"}, "unsupported encoding 'yuv422'"),
        ({"encoding": "16UC1"}, "unsupported encoding"),
        ({"step": 5}, "step 5 < width \\* channels = 6"),
        ({"data": bytes(10)}, "data has 10 bytes"),
        ({"data": bytes(17)}, "data has 17 bytes"),
        ({"height": -1}, "negative"),
    ],
)
def test_clear_errors_for_bad_messages(fields: dict, match: str) -> None:
    base = {"height": 2, "width": 2, "encoding": "rgb8", "step": 6, "data": bytes(12)}
    with pytest.raises(ImageConversionError, match=match):
        image_msg_to_numpy(SimpleNamespace(**{**base, **fields}))


def test_clear_errors_for_bad_arrays() -> None:
    with pytest.raises(ImageConversionError, match="uint8"):
        numpy_to_image_fields(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(ImageConversionError, match="needs 3 channels"):
        numpy_to_image_fields(np.zeros((2, 2, 4), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match="unsupported encoding"):
        numpy_to_image_fields(np.zeros((2, 2), np.uint8), "mono16")
    with pytest.raises(ImageConversionError, match="step"):
        numpy_to_image_fields(np.zeros((2, 2, 3), np.uint8), "rgb8", step=4)
    with pytest.raises(ImageConversionError, match="not an image message"):
        image_msg_to_numpy(SimpleNamespace(height=1, width=1))
    with pytest.raises(ImageConversionError, match="desired_encoding"):
        image_msg_to_numpy(SimpleNamespace(height=1, width=1, encoding="mono8", step=1, data=b"x"), "hsv")


def test_rclpy_sensor_msgs_image() -> None:
    sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="ROS 2 sensor_msgs not installed")
    img = random_image(24, 32, 3)
    msg = sensor_msgs.Image(**numpy_to_image_fields(img, "rgb8", step=100))
    assert isinstance(msg.data, array.array)  # rclpy stores uint8[] as array('B')
    np.testing.assert_array_equal(image_msg_to_numpy(msg), img)


# ---------------------------------------------------------------------------- CompressedImage, downscale
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_image_fields_roundtrip(fmt: str) -> None:
    from lwd_fleet.imaging import compressed_image_fields, compressed_msg_to_numpy

    y, x = np.mgrid[0:40, 0:56]
    img = np.stack([x * 4, y * 6, (x + y) * 2], -1).astype(np.uint8)  # smooth: JPEG's easy case
    fields = compressed_image_fields(img, fmt, quality=95)
    assert fields["format"] == f"rgb8; {fmt} compressed bgr8"  # image_transport's convention
    out = compressed_msg_to_numpy(SimpleNamespace(**{**fields, "data": array.array("B", fields["data"])}))
    if fmt == "png":
        np.testing.assert_array_equal(out, img)
    else:
        assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 2.0
        assert out.reshape(-1, 3).mean(0) == pytest.approx(img.reshape(-1, 3).mean(0), abs=1.0)


def test_compressed_errors_are_named() -> None:
    from lwd_fleet.imaging import compressed_image_fields, compressed_msg_to_numpy

    with pytest.raises(ImageConversionError, match="'bmp' not one of"):
        compressed_image_fields(np.zeros((2, 2, 3), np.uint8), "bmp")
    with pytest.raises(ImageConversionError, match="neither JPEG nor PNG"):
        compressed_msg_to_numpy(SimpleNamespace(format="jpeg", data=b"nope"))
    with pytest.raises(ImageConversionError, match="expected HxWx3 uint8"):
        compressed_image_fields(np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_downscale_is_the_rounded_block_mean(factor: int) -> None:
    from lwd_fleet.imaging import downscale

    img = random_image(13, 17, 3)
    out = downscale(img, factor)
    h, w = 13 // factor, 17 // factor
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    for i in range(h):  # independent computation: one block at a time
        for j in range(w):
            block = img[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor].astype(np.float64)
            np.testing.assert_array_equal(out[i, j], np.floor(block.mean(axis=(0, 1)) + 0.5).astype(np.uint8))


def test_downscale_refuses_bad_factors() -> None:
    from lwd_fleet.imaging import downscale

    with pytest.raises(ImageConversionError, match="integer >= 1"):
        downscale(random_image(4, 4, 3), 1.5)
    with pytest.raises(ImageConversionError, match="smaller than the downscale factor 8"):
        downscale(random_image(4, 4, 3), 8)
