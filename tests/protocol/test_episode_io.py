"""Episode files round-trip, commit atomically, and bad files fail with a reason that names the problem."""

from __future__ import annotations

import numpy as np
import pytest

from lwd_protocol.episode import EpisodeEnd, EpisodeSource, EpisodeStart, Outcome, episode_filename, new_episode_id
from lwd_protocol.episode_io import EpisodeFormatError, EpisodeWriter, read_episode


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
