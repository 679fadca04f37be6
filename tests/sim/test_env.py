"""Env interface: determinism, joint limits, observation contract, rendering."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from lwd_protocol.policy_io import joint_position_index
from lwd_protocol.robot_spec import ACTION_DIM, ARM_JOINT_DIMS, CAMERA_NAMES, GRIPPER_DIMS
from lwd_sim import STATE_DIM, STATE_LAYOUT, ScriptedExpert, make_env
from lwd_sim.env import EnvConfig, LwdSimEnv
from lwd_sim.robot import home_action
from lwd_sim.tasks import IMPLEMENTED_TASKS


def _rollout(task: str, seed: int, steps: int, noise_seed: int) -> tuple[np.ndarray, np.ndarray]:
    env = make_env(task, seed=seed)
    expert = ScriptedExpert(env)
    rng = np.random.default_rng(noise_seed)
    qs, states = [], []
    for _ in range(steps):
        a = expert.act() + rng.normal(0, 0.02, ACTION_DIM)
        obs, *_ = env.step(a)
        qs.append(obs["joint_position"])
        states.append(obs["sim_state"])
    return np.array(qs), np.array(states)


@pytest.mark.parametrize("task", ["restocking", "freezer", "shoebox"])
def test_same_seed_gives_identical_trajectories(task: str) -> None:
    q1, s1 = _rollout(task, 3, 80, 7)
    q2, s2 = _rollout(task, 3, 80, 7)
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(s1, s2)
    q3, _ = _rollout(task, 4, 80, 7)
    assert not np.array_equal(q1, q3), "a different seed should change the scene"


@pytest.mark.parametrize("task", ["fruit_juice", "cocktail"])
def test_reset_restores_the_scene_after_an_episode(task: str) -> None:
    """An env reused across episodes (as the generator does) replays a seed exactly: per-episode model
    edits (fixture poses, colours of cut fruit / a filled glass) are all redone by reset."""
    env = make_env(task, seed=0)

    def run(seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        env.reset(seed)
        expert = ScriptedExpert(env)
        for _ in range(steps):
            env.step(expert.act())
        return env.sim_state(), env.model.geom_rgba.copy()

    s1, rgba1 = run(3, 60)
    run(4, 450)
    s2, rgba2 = run(3, 60)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(rgba1, rgba2)


@pytest.mark.parametrize("task", IMPLEMENTED_TASKS)
def test_observation_contract(task: str) -> None:
    env = make_env(task, seed=0)
    obs = env.reset(1)
    assert obs["joint_position"].shape == (ACTION_DIM,)
    assert obs["sim_state"].shape == (STATE_DIM,) and obs["sim_state"].dtype == np.float32
    assert isinstance(obs["instruction"], str) and obs["instruction"]
    assert "images" not in obs
    assert obs["sim_state"][: len(IMPLEMENTED_TASKS) + 8].sum() >= 1  # task one-hot set
    # relative actions are anchored on these entries (lwd_protocol.policy_io.joint_position_index)
    obs, *_ = env.step(env.joint_position() + 0.05)
    joints = joint_position_index("sim_state")
    np.testing.assert_allclose(obs["sim_state"][joints], obs["joint_position"], atol=1e-6)
    with pytest.raises(ValueError):
        env.step(np.zeros(ACTION_DIM - 1))


@pytest.mark.parametrize("task", ["fruit_juice", "gongfu_tea", "open_cooler"])
def test_state_holds_the_randomly_placed_fixtures(task: str) -> None:
    """Where the board / tray / cooler went this episode is in the state (else a state policy guesses)."""
    env = make_env(task, seed=0)
    seen = []
    for seed in (1, 2, 3):
        state = env.reset(seed)["sim_state"][STATE_LAYOUT["fixtures"]]
        names = env.task.fixtures
        assert names, f"{task} moves fixtures but declares none"
        for i, name in enumerate(names):
            body = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, name)
            np.testing.assert_allclose(state[2 * i : 2 * i + 2], env.data.xpos[body][:2], atol=1e-6)
        assert not state[2 * len(names) :].any()
        seen.append(state)
    assert not np.allclose(seen[0], seen[1]) or not np.allclose(seen[1], seen[2]), "fixtures never move"


def test_state_holds_where_each_object_started_while_it_moves() -> None:
    """The expert puts used objects back where they started: that target must be in the state."""
    env = make_env("gongfu_tea", seed=0)
    obs = env.reset(5)
    homes = obs["sim_state"][STATE_LAYOUT["homes"]].reshape(-1, 2)
    for i, o in enumerate(env.spec.objects):
        expected = env.obj_pos(o.name)[:2] if o.name in env.active_objects else np.zeros(2)
        np.testing.assert_allclose(homes[i], expected, atol=1e-6)
    expert = ScriptedExpert(env)
    for _ in range(150):  # picks the first container up and carries it
        obs, *_ = env.step(expert.act())
    moved = [i for i, o in enumerate(env.spec.objects) if np.linalg.norm(env.obj_pos(o.name)[:2] - homes[i]) > 0.05]
    assert moved, "the expert moved nothing in 150 ticks"
    np.testing.assert_array_equal(obs["sim_state"][STATE_LAYOUT["homes"]].reshape(-1, 2), homes)


def test_held_homes_name_where_each_arms_object_goes_back() -> None:
    """Per arm, the start xy of what it holds (the stow target), zeros in an empty hand."""
    env = make_env("cocktail", seed=0)
    obs = env.reset(5)
    start = {name: env.obj_pos(name)[:2].copy() for name in env.active_objects}
    np.testing.assert_array_equal(obs["sim_state"][STATE_LAYOUT["held_homes"]], np.zeros(4))
    expert = ScriptedExpert(env)
    seen = set()
    for _ in range(600):  # the first liquor is picked, poured, carried back
        obs, *_ = env.step(expert.act())
        held_homes = obs["sim_state"][STATE_LAYOUT["held_homes"]].reshape(2, 2)
        for arm in (0, 1):
            name = env.held_name(arm)
            np.testing.assert_allclose(held_homes[arm], start[name] if name else np.zeros(2), atol=1e-6)
            seen.add((arm, name))
    assert any(name for _, name in seen), "the expert held nothing in 600 ticks"


def _hold_gripper_targets(env, targets: list[float], ticks: int = 30) -> np.ndarray:
    """Command each gripper target in turn for `ticks` ticks (arms held still); the final openings."""
    grippers = list(GRIPPER_DIMS)
    for target in targets:
        for _ in range(ticks):
            action = env.joint_position().copy()
            action[grippers] = target
            obs, *_ = env.step(action)
    return obs["joint_position"][grippers]


@pytest.mark.parametrize(
    ("targets", "opening"),
    [
        ([0.011], 0.04),  # open: a command above a quarter stroke keeps it open
        ([0.009], 0.0),  # ... below closes
        ([0.0, 0.029], 0.0),  # closed: a command up to three quarters keeps it closed
        ([0.0, 0.031], 0.04),  # ... above opens
        ([0.0, 0.02], 0.0),  # mid-stroke keeps whichever state it is in
        ([0.04, 0.02], 0.04),
    ],
)
def test_grippers_switch_with_hysteresis(targets: list[float], opening: float) -> None:
    env = make_env("restocking", seed=0)
    env.reset(0)
    np.testing.assert_allclose(_hold_gripper_targets(env, targets), opening, atol=0.003)


def _disturbed_holding_still(seed: int, steps: int, std: float, correlation: float = 0.9) -> np.ndarray:
    """Executed-minus-commanded joint targets while commanding the home posture (grippers open)."""
    env = LwdSimEnv("restocking", seed, EnvConfig(disturbance=std, disturbance_correlation=correlation))
    env.reset(seed)
    command = home_action()
    deviation = []
    for _ in range(steps):
        env.step(command)
        deviation.append(env.last_action - command)
    return np.array(deviation)


def test_disturbance_is_ar1_noise_on_the_arm_targets_only() -> None:
    std, correlation = 0.01, 0.9
    dev = _disturbed_holding_still(0, 2000, std, correlation)
    np.testing.assert_array_equal(dev[:, list(GRIPPER_DIMS)], 0.0)
    arm = dev[:, list(ARM_JOINT_DIMS)]
    # sample moments, computed here and compared with the configured process
    assert abs(arm.std() / std - 1.0) < 0.15
    lag1 = float(np.mean(arm[1:] * arm[:-1]) / np.mean(arm[:-1] ** 2))
    assert abs(lag1 - correlation) < 0.05
    assert np.all(np.abs(np.corrcoef(arm.T)[np.triu_indices(len(ARM_JOINT_DIMS), 1)]) < 0.3)


def test_disturbance_is_seeded_and_leaves_the_scene_alone() -> None:
    np.testing.assert_array_equal(_disturbed_holding_still(3, 50, 0.01), _disturbed_holding_still(3, 50, 0.01))
    assert not np.array_equal(_disturbed_holding_still(3, 50, 0.01), _disturbed_holding_still(4, 50, 0.01))
    np.testing.assert_array_equal(_disturbed_holding_still(3, 50, 0.0), 0.0)
    plain = make_env("gongfu_tea", seed=5).reset(5)["sim_state"]
    disturbed = LwdSimEnv("gongfu_tea", 5, EnvConfig(disturbance=0.01)).reset(5)["sim_state"]
    np.testing.assert_array_equal(plain, disturbed)


def test_joint_limits_respected_under_extreme_commands() -> None:
    env = make_env("restocking", seed=0)
    rng = np.random.default_rng(0)
    lo, hi = env.limits[:, 0], env.limits[:, 1]
    for t in range(90):
        target = np.where(rng.random(ACTION_DIM) < 0.5, lo - 1.0, hi + 1.0) if t % 30 < 20 else rng.uniform(lo, hi)
        obs, *_ = env.step(target)
        q = obs["joint_position"]
        assert np.all(q >= lo - 0.03) and np.all(q <= hi + 0.03), q - np.clip(q, lo, hi)


@pytest.mark.parametrize("size", [128, 224])
def test_render_three_cameras(size: int) -> None:
    env = make_env("restocking", seed=0, render=True, image_size=size)
    obs = env.reset(0)
    images = obs["images"]
    assert set(images) == set(CAMERA_NAMES)
    for cam, img in images.items():
        assert img.shape == (size, size, 3) and img.dtype == np.uint8, cam
        assert img.std() > 5.0, f"{cam} image is (nearly) constant"
    assert not np.array_equal(images["head"], images["left_wrist"])
    env.close()
