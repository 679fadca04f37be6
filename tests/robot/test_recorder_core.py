"""Recorder writer and crash recovery without DDS: truncated files at any byte, quarantine with
reasons, an interrupted recovery redone, a full queue that drops steps instead of blocking."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.episode_files import rgb_image_msg, stored_image_types

from lwd_fleet.recording import (
    QUARANTINE_DIR,
    RECOVERY_DIR,
    EpisodeRecorder,
    Frame,
    RecorderConfig,
    StepRecord,
    cdr_header_stamp_ns,
    joint_vector,
    recover_spool,
)
from lwd_fleet.recording.recovery import CRASHED_SUFFIX
from lwd_protocol.episode import COMPRESSED_IMAGE_TYPE, EpisodeStart, Outcome, episode_filename, new_episode_id
from lwd_protocol.episode_io import EpisodeWriter, read_episode
from lwd_protocol.robot_spec import CAMERA_NAMES, JOINT_NAMES

J = len(JOINT_NAMES)


def _start(cameras=CAMERA_NAMES) -> EpisodeStart:
    eid = new_episode_id("robot_01")
    return EpisodeStart(episode_id=eid, robot_id="robot_01", task="restocking", instruction="x", cameras=cameras)


def _crashed_file(spool: Path, steps: int, chunk_bytes: int = 4096) -> tuple[Path, EpisodeStart, int]:
    """A partial file as a SIGKILL leaves it: no end record, no footer; returns (path, start, size)."""
    start = _start()
    w = EpisodeWriter(spool / episode_filename(start.episode_id), start, chunk_bytes=chunk_bytes)
    rng = np.random.default_rng(1)
    for t in range(steps):
        for cam in start.cameras:
            w.write_image(cam, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), t, t)
        w.write_joint_state(np.full(J, t, np.float64), t, t)
        w.write_action(np.full(J, t, np.float32), t, t, source=1 if t % 5 == 0 else 0, policy_version=2)
        w.write_sim_state(
            np.zeros(3, np.float32), t, t, subtask_index=t // 10, num_subtasks=4, success=False, failed=False
        )
    w.flush()
    w.abandon()
    return w.partial_path, start, w.partial_path.stat().st_size


@pytest.mark.parametrize("keep_fraction", [1.0, 0.8, 0.5, 0.3])
def test_truncated_partial_is_rebuilt_into_a_labelled_valid_episode(tmp_path, keep_fraction):
    path, start, size = _crashed_file(tmp_path, steps=40)
    with open(path, "r+b") as f:  # the crash can cut anywhere
        f.truncate(int(size * keep_fraction))
    results = recover_spool(tmp_path)
    assert len(results) == 1
    r = results[0]
    final = tmp_path / episode_filename(start.episode_id)
    if not r.recovered:  # nothing whole survived: quarantined with a reason, never uploaded
        assert r.kept_steps == 0 and (tmp_path / QUARANTINE_DIR / f"{start.episode_id}.reason.txt").exists()
        assert not final.exists()
        return
    ep = read_episode(final)
    assert ep.end.recovered and ep.end.outcome is Outcome.UNKNOWN and ep.start.episode_id == start.episode_id
    k = ep.num_steps
    assert k == r.kept_steps and 0 < k <= 40
    np.testing.assert_array_equal(ep.action[:, 0], np.arange(k, dtype=np.float32))
    assert ep.end.num_intervention_steps == len(range(0, k, 5)) and ep.end.num_interventions == len(range(0, k, 5))
    assert ep.end.policy_versions == (2,) and ep.end.num_subtasks == 4 and ep.end.subtasks_done == (k - 1) // 10
    assert set(ep.images) == set(CAMERA_NAMES) and ep.sim_state.shape[0] == k
    assert not path.exists() and not list((tmp_path / RECOVERY_DIR).iterdir())


def test_every_cut_point_gives_a_valid_episode_or_a_quarantine(tmp_path):
    spool = tmp_path / "src"
    spool.mkdir()
    path, _, size = _crashed_file(spool, steps=12, chunk_bytes=2048)
    data = path.read_bytes()
    path.unlink()
    outcomes = set()
    for cut in range(0, size, max(1, size // 60)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / path.name).write_bytes(data[:cut])
        (r,) = recover_spool(d)
        if r.recovered:
            assert read_episode(r.path).end.recovered
        else:
            assert r.path.parent.name == QUARANTINE_DIR and r.detail
        outcomes.add(r.recovered)
    assert outcomes == {True, False}


def test_partial_without_start_record_is_quarantined_with_reason(tmp_path):
    eid = new_episode_id("robot_01")
    (tmp_path / f"{eid}.mcap.partial").write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 5)
    (r,) = recover_spool(tmp_path)
    assert not r.recovered and "no readable 'lwd.episode' record" in r.detail
    reason = (tmp_path / QUARANTINE_DIR / f"{eid}.reason.txt").read_text()
    assert "lwd.episode" in reason and (tmp_path / QUARANTINE_DIR / f"{eid}.mcap.partial").exists()


def test_complete_file_that_missed_its_rename_is_committed_unchanged(tmp_path):
    start = _start(cameras=())
    w = EpisodeWriter(tmp_path / "elsewhere.mcap", start)
    for t in range(3):
        w.write_joint_state(np.zeros(J), t, t)
        w.write_action(np.zeros(J), t, t, source=0, policy_version=1)
    from lwd_protocol.episode import EpisodeEnd

    done = w.close(EpisodeEnd(outcome=Outcome.SUCCESS, num_steps=3))
    partial = tmp_path / f"{start.episode_id}.mcap.partial"
    done.rename(partial)  # as if the crash came between fsync and rename
    (r,) = recover_spool(tmp_path)
    ep = read_episode(tmp_path / f"{start.episode_id}.mcap")
    assert r.recovered and ep.end.outcome is Outcome.SUCCESS and not ep.end.recovered


def test_recovery_interrupted_by_a_crash_is_redone(tmp_path):
    path, start, _ = _crashed_file(tmp_path, steps=10)
    work = tmp_path / RECOVERY_DIR
    work.mkdir()
    crashed = work / (f"{start.episode_id}.mcap" + CRASHED_SUFFIX)
    path.rename(crashed)
    (work / f"{start.episode_id}.mcap.partial").write_bytes(b"half a rebuild")  # left by the interrupted rebuild
    (r,) = recover_spool(tmp_path)
    ep = read_episode(tmp_path / f"{start.episode_id}.mcap")
    assert r.recovered and ep.end.recovered and 0 < ep.num_steps == r.kept_steps <= 10  # the unwritten chunk is lost
    assert not list(work.iterdir())


def _record(t: int, images: dict) -> StepRecord:
    return StepRecord(
        position=np.full(J, t, np.float32),
        source=0,
        policy_version=1,
        stamp_ns=t,
        received_mono=time.monotonic(),
        joint_position=np.full(J, t, np.float64),
        joint_velocity=None,
        joint_stamp_ns=t,
        images=images,
        controller_step=t,
    )


def test_full_queue_drops_steps_without_blocking_and_the_file_stays_contiguous(tmp_path):
    committed = []
    cfg = RecorderConfig(robot_id="robot_01", spool_dir=tmp_path, queue_steps=4, image_compression="png")
    rec = EpisodeRecorder(cfg, on_committed=lambda s, e, p: committed.append((e, p)))
    big = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)  # PNG of noise: slow to encode
    msg = rgb_image_msg(big)
    start = _start()
    rec.start(start)
    accepted = []
    t0 = time.monotonic()
    for t in range(200):
        images = {c: Frame(msg, t, time.monotonic()) for c in start.cameras}
        accepted.append(rec.add_step(_record(t, images)))
    enqueue_s = time.monotonic() - t0
    rec.end(Outcome.SUCCESS)
    assert rec.wait_idle(60) and rec.close()
    n_ok = sum(accepted)
    assert rec.dropped_total == 200 - n_ok > 0
    ((end, path),) = committed
    ep = read_episode(path)
    assert ep.num_steps == n_ok == end.num_steps and f"{200 - n_ok} steps dropped" in end.note
    kept = [t for t, ok in enumerate(accepted) if ok]
    np.testing.assert_array_equal(ep.action[:, 0], np.array(kept, np.float32))  # in order, no holes
    assert enqueue_s < 5.0  # generous: the point is that 200 calls did not wait for 200 PNG encodes


def test_default_config_records_jpeg_that_decodes_close_to_the_frames(tmp_path):
    """JPEG is the default (small episodes to upload): lossy, so the decoded frames are only close."""
    cfg = RecorderConfig(robot_id="robot_01", spool_dir=tmp_path)
    assert cfg.image_compression == "jpeg" and not cfg.passthrough_images
    committed = []
    rec = EpisodeRecorder(cfg, on_committed=lambda s, e, p: committed.append(p))
    y, x = np.mgrid[0:48, 0:64]
    frames = [np.stack([x * 3 + t, y * 4, np.full_like(x, 60 + t)], -1).astype(np.uint8) for t in range(5)]
    start = _start()
    rec.start(start)
    for t, img in enumerate(frames):
        frame = Frame(rgb_image_msg(img), t, time.monotonic())
        assert rec.add_step(_record(t, {c: frame for c in start.cameras}))
    rec.end(Outcome.SUCCESS)
    assert rec.wait_idle(60) and rec.close()
    (path,) = committed
    ep = read_episode(path)
    assert stored_image_types(path) == {COMPRESSED_IMAGE_TYPE}
    for cam in start.cameras:
        got = ep.images[cam].astype(np.float64)
        assert got.shape == (5, 48, 64, 3)
        assert np.abs(got - np.stack(frames)).mean() < 3.0, cam


def test_cdr_stamp_and_joint_reordering():
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    msg = Image(height=1, width=1, encoding="rgb8", step=3, data=b"abc")
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 456_789
    assert cdr_header_stamp_ns(serialize_message(msg)) == 1_700_000_123_000_456_789
    names = list(reversed(JOINT_NAMES))
    np.testing.assert_array_equal(joint_vector(names, np.arange(J)[::-1]), np.arange(J))
    with pytest.raises(ValueError, match="lacks"):
        joint_vector(names[:-1], np.arange(J - 1))
    with pytest.raises(ValueError, match="unnamed joint vector of 3"):
        joint_vector([], [1, 2, 3])


def test_bad_recorder_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="image_compression 'gif'"):
        RecorderConfig(robot_id="robot_01", spool_dir=tmp_path, image_compression="gif")
    with pytest.raises(ValueError, match="image_downscale"):
        RecorderConfig(robot_id="robot_01", spool_dir=tmp_path, image_downscale=0)


@pytest.mark.parametrize("final", [None, (2, 2)])
def test_the_outcome_report_sets_the_final_subtask_count(tmp_path, final):
    """The sim's success tick ends the episode, so no recorded step carries its subtask count:
    the end record takes it from the outcome report, else from the last recorded step."""
    committed = []
    rec = EpisodeRecorder(
        RecorderConfig(robot_id="robot_01", spool_dir=tmp_path), on_committed=lambda s, e, p: committed.append(e)
    )
    start = _start(cameras=())
    rec.start(start)
    for t in range(6):
        sim = {"state": [0.0], "subtask_index": t // 3, "num_subtasks": 2, "success": False, "failed": False}
        assert rec.add_step(dataclasses.replace(_record(t, {}), sim=sim))
    rec.end(Outcome.SUCCESS, progress=final)
    assert rec.wait_idle(60) and rec.close()
    (end,) = committed
    assert (end.subtasks_done, end.num_subtasks) == (final or (1, 2))
