"""Episode files round-trip, commit atomically, and bad files fail with a reason that names the problem."""

from __future__ import annotations

import numpy as np
import pytest

from lwd_protocol.episode import EpisodeEnd, EpisodeSource, EpisodeStart, Outcome, episode_filename, new_episode_id
from lwd_protocol.episode_io import EpisodeFormatError, EpisodeWriter, decode_image, encode_image, read_episode


def _write(tmp_path, steps=12, cameras=True, end=True, corrupt_action_at=None, image_hw=(24, 32)):
    eid = new_episode_id("robot_07")
    start = EpisodeStart(
        episode_id=eid,
        robot_id="robot_07",
        task="shoebox",
        instruction="pack the shoes",
        source=EpisodeSource.ROLLOUT,
        policy_version=3,
        seed=11,
    )
    writer = EpisodeWriter(tmp_path / episode_filename(eid), start)
    rng = np.random.default_rng(0)
    frames = {}
    for t in range(steps):
        ns = 1_000_000_000 + t * 33_333_333
        if cameras:
            for cam in start.cameras:
                img = rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8)
                frames[(cam, t)] = img
                writer.write_image(cam, img, t, ns)
        writer.write_joint_state(np.full(16, t, np.float32), t, ns)
        action = np.full(16, 0.1 * t, np.float32)
        if corrupt_action_at == t:
            action[3] = np.nan
        writer.write_action(action, t, ns, source=1 if 4 <= t < 7 else 0, policy_version=3)
        writer.write_sim_state(
            np.arange(5, dtype=np.float32) * t, t, ns, subtask_index=t // 4, num_subtasks=5, success=False, failed=False
        )
    if not end:
        writer.abandon()
        return writer.partial_path, frames
    path = writer.close(
        EpisodeEnd(
            outcome=Outcome.FAILURE,
            num_steps=steps,
            num_intervention_steps=3,
            num_interventions=1,
            subtasks_done=2,
            num_subtasks=5,
            policy_versions=(3,),
        )
    )
    return path, frames


def test_roundtrip_preserves_everything(tmp_path):
    path, frames = _write(tmp_path)
    assert not path.with_name(path.name + ".partial").exists()
    ep = read_episode(path)
    assert ep.start.robot_id == "robot_07" and ep.start.task == "shoebox" and ep.start.seed == 11
    assert ep.start.source is EpisodeSource.ROLLOUT
    assert ep.end.outcome is Outcome.FAILURE and ep.end.score == pytest.approx(0.4)
    assert ep.num_steps == 12
    np.testing.assert_allclose(ep.action[:, 0], 0.1 * np.arange(12), rtol=1e-6)
    assert ep.action_source.tolist() == [0] * 4 + [1] * 3 + [0] * 5
    assert ep.subtask_index.tolist() == [t // 4 for t in range(12)]
    for (cam, t), img in frames.items():
        np.testing.assert_array_equal(ep.images[cam][t], img)


def test_images_can_be_skipped(tmp_path):
    path, _ = _write(tmp_path)
    assert read_episode(path, load_images=False).images == {}


def test_partial_file_is_refused_unless_allowed(tmp_path):
    path, _ = _write(tmp_path, end=False)
    with pytest.raises(EpisodeFormatError):
        read_episode(path)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.97])
def test_truncated_file_names_the_problem(tmp_path, cut):
    path, _ = _write(tmp_path)
    data = path.read_bytes()
    with pytest.raises(EpisodeFormatError) as err:
        read_episode(data[: int(len(data) * cut)])
    assert str(err.value)


def test_garbage_is_refused(tmp_path):
    with pytest.raises(EpisodeFormatError):
        read_episode(b"this is not an mcap file at all" * 10)


def test_nan_action_is_refused(tmp_path):
    path, _ = _write(tmp_path, cameras=False, corrupt_action_at=5)
    with pytest.raises(EpisodeFormatError, match="non-finite actions at step 5"):
        read_episode(path)


def test_unknown_task_is_refused_at_write_time():
    with pytest.raises(KeyError, match="unknown task"):
        EpisodeStart(episode_id="r-1", robot_id="robot_01", task="juggling", instruction="")


def test_bad_ids_are_refused():
    with pytest.raises(ValueError):
        EpisodeStart(episode_id="../../etc/passwd", robot_id="robot_01", task="restocking", instruction="")
    with pytest.raises(ValueError):
        EpisodeStart(episode_id="ok-1", robot_id="Robot 1", task="restocking", instruction="")


# ---------------------------------------------------------------------------- compressed images
def _smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients + a little noise: what JPEG is made for (noise-only frames are its worst case)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


def _write_compressed(tmp_path, fmt: str, steps: int = 4):
    eid = new_episode_id("robot_07")
    start = EpisodeStart(episode_id=eid, robot_id="robot_07", task="shoebox", instruction="pack")
    writer = EpisodeWriter(tmp_path / episode_filename(eid), start)
    frames = {}
    for t in range(steps):
        for i, cam in enumerate(start.cameras):
            frames[(cam, t)] = img = _smooth_image(48, 64, seed=10 * t + i)
            writer.write_image(cam, img, t, 1000 + t, compression=fmt, quality=95)
        writer.write_joint_state(np.zeros(16), t, 1000 + t)
        writer.write_action(np.zeros(16), t, 1000 + t, source=0, policy_version=1)
    return writer.close(EpisodeEnd(outcome=Outcome.SUCCESS, num_steps=steps)), frames


@pytest.mark.parametrize("codec", ["opencv", "pillow"])
def test_png_episode_roundtrips_exactly(tmp_path, monkeypatch, codec):
    import lwd_protocol.episode_io as eio

    if codec == "pillow":
        monkeypatch.setattr(eio, "_cv2", lambda: None)  # take the Pillow path even where OpenCV is installed
    elif eio._cv2() is None:
        pytest.skip("OpenCV not installed")
    path, frames = _write_compressed(tmp_path, "png")
    ep = read_episode(path)
    for (cam, t), img in frames.items():
        np.testing.assert_array_equal(ep.images[cam][t], img)


@pytest.mark.parametrize("codec", ["opencv", "pillow"])
def test_jpeg_episode_is_close_and_smaller(tmp_path, monkeypatch, codec):
    import lwd_protocol.episode_io as eio

    if codec == "pillow":
        monkeypatch.setattr(eio, "_cv2", lambda: None)
    elif eio._cv2() is None:
        pytest.skip("OpenCV not installed")
    path, frames = _write_compressed(tmp_path, "jpeg")
    (tmp_path / "png").mkdir()
    png_path, _ = _write_compressed(tmp_path / "png", "png")
    ep = read_episode(path)
    for (cam, t), img in frames.items():
        got = ep.images[cam][t]
        assert got.shape == img.shape and got.dtype == np.uint8
        mse = np.mean((got.astype(np.float64) - img) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30, f"{cam}@{t}: JPEG q95 PSNR too low"
    assert path.stat().st_size < png_path.stat().st_size


def test_corrupt_compressed_image_names_topic_and_step(tmp_path):
    eid = new_episode_id("robot_07")
    start = EpisodeStart(episode_id=eid, robot_id="robot_07", task="shoebox", instruction="", cameras=("head",))
    writer = EpisodeWriter(tmp_path / episode_filename(eid), start)
    good = encode_image(np.zeros((8, 8, 3), np.uint8), "jpeg")
    for t in range(2):
        data = good if t == 0 else b"\xff\xd8\xff" + b"\x00" * 40  # JPEG magic, garbage body
        writer.write_compressed_image("head", data, "jpeg", t, t)
        writer.write_joint_state(np.zeros(16), t, t)
        writer.write_action(np.zeros(16), t, t, source=0, policy_version=0)
    path = writer.close(EpisodeEnd(outcome=Outcome.UNKNOWN, num_steps=2))
    with pytest.raises(EpisodeFormatError, match=r"/observation/images/head step 1: corrupt jpeg"):
        read_episode(path)
    assert read_episode(path, load_images=False).num_steps == 2


def test_one_topic_cannot_mix_raw_and_compressed(tmp_path):
    eid = new_episode_id("robot_07")
    start = EpisodeStart(episode_id=eid, robot_id="robot_07", task="shoebox", instruction="")
    writer = EpisodeWriter(tmp_path / episode_filename(eid), start)
    img = np.zeros((4, 4, 3), np.uint8)
    writer.write_image("head", img, 0, 0)
    with pytest.raises(ValueError, match="already written as sensor_msgs/msg/Image"):
        writer.write_image("head", img, 1, 1, compression="png")
    writer.abandon()


def test_bad_compression_arguments_are_refused():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="image format 'webp'"):
        encode_image(img, "webp")
    with pytest.raises(ValueError, match="quality must be 1-100"):
        encode_image(img, "jpeg", quality=0)
    with pytest.raises(ValueError, match="neither JPEG nor PNG"):
        decode_image(b"GIF89a....")
