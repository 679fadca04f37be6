"""Write and read episode files (MCAP, zstd chunks, ros2msg/CDR schemas from msg/).

The writer is what the robot's recorder and the sim data generator both use, so the learner
reads one format whatever produced it. Files are written to `<name>.partial`, fsync'd and
renamed on close: a reader never sees a half-written `.mcap`. The reader validates as it goes
and raises EpisodeFormatError naming what is wrong, so the Coordinator can quarantine a bad
file with that reason instead of crashing or dropping it.

Camera topics hold either raw `sensor_msgs/Image` (rgb8) or `sensor_msgs/CompressedImage`
(format "jpeg" or "png"; one kind per topic and file): raw camera images barely compress under
zstd, so a robot that must keep its spool small records JPEG. The reader decodes both to
(H, W, 3) uint8 RGB; the codec is OpenCV when installed, else Pillow (imported lazily, so
readers of raw-only episodes need neither).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import zstandard
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.writer import CompressionType
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer as Ros2Writer

from lwd_protocol.episode import (
    COMPRESSED_IMAGE_TYPE,
    END_RECORD,
    PARTIAL_SUFFIX,
    REQUIRED_TOPICS,
    START_RECORD,
    TOPIC_TYPES,
    EpisodeEnd,
    EpisodeStart,
    EpisodeTopics,
)
from lwd_protocol.interfaces import full_definition

MAX_EPISODE_STEPS = 30 * 60 * 30  # 30 min at 30 Hz: anything longer is malformed
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
IMAGE_FORMATS = ("jpeg", "png")  # CompressedImage.format values written into episodes


class EpisodeFormatError(ValueError):
    """An episode file that does not follow the contract; the message names the problem."""


def _stamp(ns: int) -> dict[str, int]:
    return {"sec": int(ns // 1_000_000_000), "nanosec": int(ns % 1_000_000_000)}


def _header(ns: int, frame_id: str = "") -> dict[str, Any]:
    return {"stamp": _stamp(ns), "frame_id": frame_id}


class EpisodeWriter:
    """Streams one episode into `<final_path>.partial`; close() commits it atomically.

    Per-tick messages take the control-step index `step`; it becomes the MCAP sequence.
    `write_raw` accepts CDR bytes straight from an rclpy raw subscription (no re-encoding).
    """

    def __init__(self, final_path: str | os.PathLike, start: EpisodeStart, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.final_path = Path(final_path)
        self.partial_path = self.final_path.with_name(self.final_path.name + PARTIAL_SUFFIX)
        self.start = start
        self._file: BinaryIO = open(self.partial_path, "wb")
        self._writer = Ros2Writer(self._file, chunk_size=chunk_bytes, compression=CompressionType.ZSTD)
        self._schemas: dict[str, Any] = {}
        self._topic_types: dict[str, str] = {}  # one schema per topic: a channel cannot change type
        self._writer.add_metadata(START_RECORD, start.to_record())
        self._closed = False

    def _check_topic_type(self, topic: str, type_name: str) -> None:
        known = self._topic_types.setdefault(topic, type_name)
        if known != type_name:
            raise ValueError(f"{topic}: already written as {known}, cannot also write {type_name} in one episode")

    def _schema(self, type_name: str):
        schema = self._schemas.get(type_name)
        if schema is None:
            schema = self._writer.register_msgdef(type_name, full_definition(type_name))
            self._schemas[type_name] = schema
        return schema

    def write(
        self, topic: str, message: dict[str, Any], step: int, log_time_ns: int, type_name: str | None = None
    ) -> None:
        type_name = type_name or TOPIC_TYPES[topic]
        self._check_topic_type(topic, type_name)
        self._writer.write_message(topic, self._schema(type_name), message, log_time=log_time_ns, sequence=step)

    def write_raw(self, topic: str, type_name: str, cdr: bytes, step: int, log_time_ns: int) -> None:
        """Append already-serialized CDR bytes (e.g. from rclpy with raw=True)."""
        self._check_topic_type(topic, type_name)
        schema = self._schema(type_name)
        inner = self._writer._writer  # mcap.writer.Writer: register the channel once, then append bytes
        channels = self._writer._channel_ids
        if topic not in channels:
            channels[topic] = inner.register_channel(topic=topic, message_encoding="cdr", schema_id=schema.id)
        inner.add_message(
            channel_id=channels[topic], log_time=log_time_ns, publish_time=log_time_ns, sequence=step, data=cdr
        )

    # Convenience encoders for the per-tick topics -------------------------------------------
    def write_image(
        self,
        camera: str,
        image: np.ndarray,
        step: int,
        stamp_ns: int,
        compression: str | None = None,
        quality: int = 90,
    ) -> None:
        """rgb8 frame -> Image, or CompressedImage when compression is "jpeg" (lossy) or "png" (lossless)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"camera {camera}: expected HxWx3 uint8 rgb8, got {image.dtype} {image.shape}")
        if compression is not None:
            data = encode_image(image, compression, quality)
            self.write_compressed_image(camera, data, compression, step, stamp_ns)
            return
        h, w, _ = image.shape
        msg = {
            "header": _header(stamp_ns, camera),
            "height": h,
            "width": w,
            "encoding": "rgb8",
            "is_bigendian": 0,
            "step": w * 3,
            "data": np.ascontiguousarray(image).tobytes(),
        }
        self.write(EpisodeTopics.image(camera), msg, step, stamp_ns)

    def write_compressed_image(self, camera: str, data: bytes, image_format: str, step: int, stamp_ns: int) -> None:
        """Already-encoded JPEG/PNG bytes (e.g. from a camera's compressed stream) as a CompressedImage."""
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"camera {camera}: image format {image_format!r} not one of {IMAGE_FORMATS}")
        msg = {"header": _header(stamp_ns, camera), "format": image_format, "data": bytes(data)}
        self.write(EpisodeTopics.image(camera), msg, step, stamp_ns, type_name=COMPRESSED_IMAGE_TYPE)

    def write_joint_state(
        self, position: np.ndarray, step: int, stamp_ns: int, velocity: np.ndarray | None = None
    ) -> None:
        msg = {
            "header": _header(stamp_ns),
            "name": list(self.start.joint_names),
            "position": np.asarray(position, np.float64).tolist(),
            "velocity": [] if velocity is None else np.asarray(velocity, np.float64).tolist(),
            "effort": [],
        }
        self.write(EpisodeTopics.JOINT_STATE, msg, step, stamp_ns)

    def write_action(self, position: np.ndarray, step: int, stamp_ns: int, source: int, policy_version: int) -> None:
        msg = {
            "header": _header(stamp_ns),
            "step": step,
            "source": int(source),
            "policy_version": int(policy_version),
            "position": np.asarray(position, np.float32).tolist(),
        }
        self.write(EpisodeTopics.ACTION, msg, step, stamp_ns)

    def write_sim_state(
        self,
        state: np.ndarray,
        step: int,
        stamp_ns: int,
        subtask_index: int,
        num_subtasks: int,
        success: bool,
        failed: bool,
    ) -> None:
        msg = {
            "header": _header(stamp_ns),
            "step": step,
            "task": self.start.task,
            "state": np.asarray(state, np.float32).tolist(),
            "subtask_index": int(subtask_index),
            "num_subtasks": int(num_subtasks),
            "success": bool(success),
            "failed": bool(failed),
        }
        self.write(EpisodeTopics.SIM_STATE, msg, step, stamp_ns)

    def flush(self) -> None:
        """Push buffered bytes to the OS so a process crash loses at most the chunk being built."""
        if not self._closed:
            self._file.flush()

    def close(self, end: EpisodeEnd) -> Path:
        """Write the end record, fsync, rename to the final name; return the final path."""
        if self._closed:
            raise RuntimeError(f"episode {self.start.episode_id} already closed")
        self._writer.add_metadata(END_RECORD, end.to_record())
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial_path, self.final_path)
        _fsync_dir(self.final_path.parent)
        self._closed = True
        return self.final_path

    def abandon(self) -> None:
        """Close the partial file without committing it (it stays on disk for recovery)."""
        if not self._closed:
            self._file.close()
            self._closed = True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Episode:
    """A decoded episode, aligned by control step (row t = tick t)."""

    start: EpisodeStart
    end: EpisodeEnd | None
    steps: np.ndarray  # (T,) int64
    joint_position: np.ndarray  # (T, J) float32 observation
    action: np.ndarray  # (T, A) float32 executed joint targets
    action_source: np.ndarray  # (T,) uint8 ExecutedAction.SOURCE_*
    policy_version: np.ndarray  # (T,) uint32
    stamps_ns: np.ndarray  # (T,) int64 action log times
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (T, H, W, 3) uint8
    sim_state: np.ndarray | None = None  # (T, S) float32, sim only
    subtask_index: np.ndarray | None = None  # (T,) int16, sim only

    @property
    def num_steps(self) -> int:
        return int(self.steps.shape[0])

    @property
    def complete(self) -> bool:
        return self.end is not None


class ProtocolDecoderFactory(DecoderFactory):
    """Decode only schemas whose text is exactly the protocol's definition of that type.

    An episode file is untrusted input: its embedded schema text would otherwise be parsed and
    code-generated on the fly, so a forged or corrupted schema is refused before it is parsed.
    """

    def decoder_for(self, message_encoding: str, schema: Any):
        if schema is None:
            raise EpisodeFormatError("message without a schema")
        try:
            expected = full_definition(schema.name).encode()
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise EpisodeFormatError(f"schema {schema.name!r} is not a protocol type") from exc
        if bytes(schema.data) != expected:
            raise EpisodeFormatError(f"schema {schema.name!r} differs from the protocol's definition")
        return super().decoder_for(message_encoding, schema)


def read_episode(source: str | os.PathLike | bytes, load_images: bool = True, allow_partial: bool = False) -> Episode:
    """Decode and validate an episode; raise EpisodeFormatError naming the first problem found."""
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes | bytearray) else open(source, "rb")
    try:
        return _read(stream, load_images, allow_partial)
    except EpisodeFormatError:
        raise
    except (
        McapError,
        EOFError,
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AssertionError,
        UnicodeDecodeError,
        struct.error,  # a record shorter than its header says (truncated or fuzzed file)
        OverflowError,  # a corrupt length field
        MemoryError,
        zstandard.ZstdError,
    ) as exc:
        raise EpisodeFormatError(f"unreadable MCAP: {type(exc).__name__}: {exc}") from exc
    finally:
        stream.close()


def _read(stream: BinaryIO, load_images: bool, allow_partial: bool) -> Episode:
    reader = make_reader(stream, validate_crcs=True, decoder_factories=[ProtocolDecoderFactory()])
    records = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
    if START_RECORD not in records:
        raise EpisodeFormatError(f"missing metadata record {START_RECORD!r}")
    try:
        start = EpisodeStart.from_record(records[START_RECORD])
        end = EpisodeEnd.from_record(records[END_RECORD]) if END_RECORD in records else None
    except (ValueError, KeyError, TypeError) as exc:
        raise EpisodeFormatError(f"bad episode metadata: {exc}") from exc
    if end is None and not allow_partial:
        raise EpisodeFormatError(f"episode {start.episode_id} is partial: no {END_RECORD!r} record")

    wanted = {EpisodeTopics.JOINT_STATE, EpisodeTopics.ACTION, EpisodeTopics.SIM_STATE}
    if load_images:
        wanted |= {EpisodeTopics.image(c) for c in start.cameras}
    joint: dict[int, np.ndarray] = {}
    action: dict[int, tuple[np.ndarray, int, int, int]] = {}
    sim: dict[int, tuple[np.ndarray, int]] = {}
    images: dict[str, dict[int, np.ndarray]] = {c: {} for c in start.cameras}
    n_joints = len(start.joint_names)
    for schema, channel, message, decoded in reader.iter_decoded_messages(topics=sorted(wanted)):
        topic, step = channel.topic, int(message.sequence)
        if step >= MAX_EPISODE_STEPS:
            raise EpisodeFormatError(f"{topic}: step {step} exceeds the {MAX_EPISODE_STEPS}-step limit")
        expected = TOPIC_TYPES.get(topic)
        if (
            expected
            and schema.name != expected
            and not (topic.startswith("/observation/images/") and schema.name == COMPRESSED_IMAGE_TYPE)
        ):
            raise EpisodeFormatError(f"{topic}: schema {schema.name!r}, expected {expected!r}")
        if topic == EpisodeTopics.JOINT_STATE:
            pos = np.asarray(decoded.position, np.float32)
            if pos.shape != (n_joints,):
                raise EpisodeFormatError(f"{topic} step {step}: {pos.shape[0]} positions, expected {n_joints}")
            joint[step] = pos
        elif topic == EpisodeTopics.ACTION:
            pos = np.asarray(decoded.position, np.float32)
            if pos.shape != (n_joints,):
                raise EpisodeFormatError(f"{topic} step {step}: action of {pos.shape[0]} values, expected {n_joints}")
            action[step] = (pos, int(decoded.source), int(decoded.policy_version), int(message.log_time))
        elif topic == EpisodeTopics.SIM_STATE:
            sim[step] = (np.asarray(decoded.state, np.float32), int(decoded.subtask_index))
        else:
            camera = topic.rsplit("/", 1)[1]
            images[camera][step] = _decode_image(decoded, topic, step)

    for topic, table in ((EpisodeTopics.JOINT_STATE, joint), (EpisodeTopics.ACTION, action)):
        if not table and topic in REQUIRED_TOPICS:
            raise EpisodeFormatError(f"missing topic {topic!r}")
    steps = np.array(sorted(action), np.int64)
    if sorted(joint) != steps.tolist():
        raise EpisodeFormatError(f"steps of {EpisodeTopics.JOINT_STATE} and {EpisodeTopics.ACTION} differ")
    if steps.tolist() != list(range(len(steps))):
        raise EpisodeFormatError("action steps are not contiguous from 0")
    if end is not None and end.num_steps != len(steps):
        raise EpisodeFormatError(f"metadata says {end.num_steps} steps, file holds {len(steps)}")
    joint_arr = np.stack([joint[s] for s in steps])
    action_arr = np.stack([action[s][0] for s in steps])
    for name, arr in (("joint positions", joint_arr), ("actions", action_arr)):
        if not np.all(np.isfinite(arr)):
            bad = int(np.argwhere(~np.isfinite(arr))[0][0])
            raise EpisodeFormatError(f"non-finite {name} at step {bad}")
    episode = Episode(
        start=start,
        end=end,
        steps=steps,
        joint_position=joint_arr,
        action=action_arr,
        action_source=np.array([action[s][1] for s in steps], np.uint8),
        policy_version=np.array([action[s][2] for s in steps], np.uint32),
        stamps_ns=np.array([action[s][3] for s in steps], np.int64),
    )
    if sim:
        if sorted(sim) != steps.tolist():
            raise EpisodeFormatError(f"steps of {EpisodeTopics.SIM_STATE} do not match the actions")
        episode.sim_state = np.stack([sim[s][0] for s in steps])
        if not np.all(np.isfinite(episode.sim_state)):
            bad = int(np.argwhere(~np.isfinite(episode.sim_state))[0][0])
            raise EpisodeFormatError(f"non-finite sim state at step {bad}")
        episode.subtask_index = np.array([sim[s][1] for s in steps], np.int16)
    if load_images:
        for camera, table in images.items():
            if not table:
                continue
            if sorted(table) != steps.tolist():
                raise EpisodeFormatError(f"camera {camera}: {len(table)} frames for {len(steps)} steps")
            episode.images[camera] = np.stack([table[s] for s in steps])
    return episode


def _decode_image(decoded: Any, topic: str, step: int) -> np.ndarray:
    if hasattr(decoded, "format"):  # CompressedImage
        try:
            return decode_image(bytes(decoded.data))
        except ValueError as exc:
            raise EpisodeFormatError(f"{topic} step {step}: {exc}") from exc
    if decoded.encoding != "rgb8":
        raise EpisodeFormatError(f"{topic} step {step}: encoding {decoded.encoding!r}, expected 'rgb8'")
    h, w, row = int(decoded.height), int(decoded.width), int(decoded.step)
    data = np.frombuffer(bytes(decoded.data), np.uint8)
    if row < w * 3 or data.size != h * row:
        raise EpisodeFormatError(f"{topic} step {step}: {data.size} bytes for {h}x{w} rows of {row}")
    return data.reshape(h, row)[:, : w * 3].reshape(h, w, 3)


# ---------------------------------------------------------------------------- image codec
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cv2() -> Any | None:
    try:
        import cv2

        return cv2
    except ImportError:
        return None


def _pil() -> Any:
    try:
        from PIL import Image

        return Image
    except ImportError as exc:
        raise RuntimeError("compressed images need an image codec: install opencv-python-headless or pillow") from exc


def encode_image(image: np.ndarray, image_format: str, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG (quality 1-100) or PNG bytes."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r} not one of {IMAGE_FORMATS}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8 rgb8, got {image.dtype} {image.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be 1-100, got {quality}")
    cv2 = _cv2()
    if cv2 is not None:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if image_format == "jpeg" else []
        ok, buf = cv2.imencode(".jpg" if image_format == "jpeg" else ".png", bgr, params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {image.shape} image as {image_format}")
        return buf.tobytes()
    out = io.BytesIO()
    pil = _pil().fromarray(np.ascontiguousarray(image), "RGB")
    if image_format == "jpeg":
        pil.save(out, "JPEG", quality=int(quality))
    else:
        pil.save(out, "PNG")
    return out.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """JPEG or PNG bytes -> (H, W, 3) uint8 RGB; ValueError naming the problem for anything else."""
    if data.startswith(_JPEG_MAGIC):
        kind = "jpeg"
    elif data.startswith(_PNG_MAGIC):
        kind = "png"
    else:
        raise ValueError(f"compressed image is neither JPEG nor PNG (starts with {data[:8]!r})")
    cv2 = _cv2()
    if cv2 is not None:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"corrupt {kind} image ({len(data)} bytes)")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    try:
        with _pil().open(io.BytesIO(data)) as pil:
            return np.asarray(pil.convert("RGB"), np.uint8).copy()
    except OSError as exc:
        raise ValueError(f"corrupt {kind} image ({len(data)} bytes): {exc}") from exc
