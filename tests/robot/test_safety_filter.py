"""Property tests for SafetyFilter: whatever comes in, what goes out is within limits and steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwd_fleet.control.safety import HELD_FLAGS, SafetyConfig, SafetyFilter, SafetyFlag
from lwd_protocol.robot_spec import ACTION_DIM, JOINT_NAMES

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
limit_float = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
step_float = st.floats(min_value=1e-6, max_value=10.0, allow_nan=False, allow_infinity=False)


@st.composite
def configs(draw: st.DrawFn, limits: st.SearchStrategy[float] = limit_float) -> SafetyConfig:
    n = draw(st.integers(min_value=1, max_value=ACTION_DIM))
    a = draw(st.lists(limits, min_size=n, max_size=n))
    b = draw(st.lists(limits, min_size=n, max_size=n))
    lower = [min(x, y) for x, y in zip(a, b, strict=True)]
    upper = [max(x, y) for x, y in zip(a, b, strict=True)]
    grippers = draw(st.lists(st.integers(0, n - 1), max_size=2, unique=True))
    return SafetyConfig(
        lower=tuple(lower),
        upper=tuple(upper),
        max_step_arm=draw(step_float),
        max_step_gripper=draw(step_float),
        gripper_indices=tuple(grippers),
    )


def _float32(values: list[float]) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(values, np.float32)


def commands(n: int) -> st.SearchStrategy[object]:
    """Right-length float vectors (NaN/inf/huge included) mixed with junk of every kind."""
    right = st.lists(any_float, min_size=n, max_size=n)
    near = st.lists(st.floats(-1e7, 1e7), min_size=n, max_size=n)
    wrong_len = st.lists(any_float, max_size=2 * n + 2).filter(lambda v: len(v) != n)
    junk = st.one_of(
        st.none(),
        st.text(max_size=5),
        st.just([[1.0, 2.0], [3.0]]),
        st.just(np.zeros((n, 1))),
        st.lists(st.one_of(st.none(), st.floats()), min_size=n, max_size=n),
        st.integers(),
        st.just(np.full(n, 1e300, dtype=np.longdouble) ** 2),
    )
    return st.one_of(right, near, right.map(np.asarray), right.map(_float32), wrong_len, junk)


def tolerance(*values: np.ndarray) -> np.ndarray:
    """A few ulps of the magnitudes involved: last + step is one rounded float add."""
    mag = np.maximum.reduce([np.abs(v) for v in values])
    return 4 * np.spacing(np.maximum(mag, 1.0))


@st.composite
def scenarios(draw: st.DrawFn, limits: st.SearchStrategy[float] = limit_float) -> tuple[SafetyConfig, np.ndarray, list]:
    cfg = draw(configs(limits))
    n = cfg.num_joints
    init = np.asarray(draw(st.lists(st.floats(-1e307, 1e307), min_size=n, max_size=n)))
    cmds = draw(st.lists(commands(n), min_size=1, max_size=12))
    return cfg, init, cmds


@SETTINGS
@given(st.one_of(scenarios(), scenarios(st.floats(-1e300, 1e300))))
def test_output_always_within_limits_and_step(scenario: tuple[SafetyConfig, np.ndarray, list[object]]) -> None:
    """Any limits (up to +-1e300 wide), any initial pose, any sequence of inputs."""
    cfg, init, cmds = scenario
    lo, hi, step = np.asarray(cfg.lower), np.asarray(cfg.upper), cfg.max_step
    filt = SafetyFilter(cfg, init)
    prev = filt.last_command
    assert np.all(prev >= lo) and np.all(prev <= hi)
    for cmd in cmds:
        res = filt.filter(cmd)
        out = res.command
        assert out.shape == (cfg.num_joints,) and out.dtype == np.float64
        assert np.all(np.isfinite(out))
        assert np.all(out >= lo) and np.all(out <= hi), (cmd, out)
        assert np.all(np.abs(out - prev) <= step + tolerance(out, prev)), (cmd, prev, out)
        if res.held:
            assert np.array_equal(out, prev)
            assert res.reason
        if res.flags == SafetyFlag.NONE:  # passed through: exactly the (finite, in-limit) request
            requested = np.asarray(cmd, dtype=np.float64)
            assert np.all(np.abs(out - requested) <= tolerance(out, prev)), (cmd, out)
        prev = out


@SETTINGS
@given(st.data())
def test_estop_and_hold_keep_position(data: st.DataObject) -> None:
    cfg = data.draw(configs())
    n = cfg.num_joints
    filt = SafetyFilter(cfg, data.draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n)))
    for cmd in data.draw(st.lists(commands(n), max_size=4)):
        filt.filter(cmd)
    held = filt.last_command
    use_estop = data.draw(st.booleans())
    if use_estop:
        filt.engage_estop("button")
        filt.set_hold(data.draw(st.booleans()))  # hold on top of e-stop changes nothing
    else:
        filt.set_hold(True, "watchdog")
    for cmd in data.draw(st.lists(commands(n), min_size=1, max_size=6)):
        res = filt.filter(cmd)
        assert np.array_equal(res.command, held)
        assert res.flags & (SafetyFlag.ESTOP if use_estop else SafetyFlag.HOLD)
        assert res.held
    assert np.array_equal(filt.hold().command, held)


def simple_config(n: int = ACTION_DIM) -> SafetyConfig:
    return SafetyConfig(lower=(-1.0,) * n, upper=(1.0,) * n, max_step_arm=0.1, max_step_gripper=0.01)


def test_estop_latch_needs_explicit_release_then_resumes_rate_limited() -> None:
    filt = SafetyFilter(simple_config(), np.zeros(ACTION_DIM))
    filt.engage_estop("pendant")
    for _ in range(3):
        res = filt.filter(np.full(ACTION_DIM, 0.5))
        assert res.flags == SafetyFlag.ESTOP and "pendant" in res.reason
        assert np.array_equal(res.command, np.zeros(ACTION_DIM))
    filt.set_hold(False)  # clearing hold does not clear the e-stop
    assert filt.estopped
    assert filt.release_estop() and not filt.estopped
    assert not filt.release_estop()
    res = filt.filter(np.full(ACTION_DIM, 0.5))
    assert res.flags == SafetyFlag.RATE_LIMITED
    assert res.command[0] == pytest.approx(0.1) and res.command[7] == pytest.approx(0.01)  # gripper step


def test_flags_and_reasons_name_the_joints() -> None:
    filt = SafetyFilter(simple_config(), np.zeros(ACTION_DIM))
    cmd = np.zeros(ACTION_DIM)
    cmd[0] = 5.0
    res = filt.filter(cmd)
    assert res.flags == SafetyFlag.CLAMPED | SafetyFlag.RATE_LIMITED
    assert "left_joint1" in res.reason and res.command[0] == pytest.approx(0.1)
    cmd[3] = math.nan
    res = filt.filter(cmd)
    assert res.flags == SafetyFlag.NON_FINITE and "left_joint4" in res.reason
    assert res.flags & HELD_FLAGS
    assert filt.filter(cmd[:5]).flags == SafetyFlag.WRONG_LENGTH
    assert filt.filter("abc").flags == SafetyFlag.MALFORMED
    assert filt.filter([None] * ACTION_DIM).flags == SafetyFlag.MALFORMED
    ok = filt.filter(np.full(ACTION_DIM, 0.005))
    assert ok.flags == SafetyFlag.NONE and ok.reason == "" and not ok.modified


def test_array_array_float32_input_like_ros_messages() -> None:
    import array

    filt = SafetyFilter(simple_config(), np.zeros(ACTION_DIM))
    res = filt.filter(array.array("f", [0.005] * ACTION_DIM))
    assert res.flags == SafetyFlag.NONE
    np.testing.assert_allclose(res.command, 0.005, atol=1e-7)


def test_reset_clamps_measured_pose_and_rejects_garbage() -> None:
    filt = SafetyFilter(simple_config(), np.full(ACTION_DIM, 3.0))
    assert np.all(filt.last_command == 1.0)
    with pytest.raises(ValueError):
        filt.reset([0.0] * 3)
    with pytest.raises(ValueError):
        filt.reset([math.nan] * ACTION_DIM)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lower": (0.0, 1.0), "upper": (1.0, 0.5)},
        {"lower": (0.0,), "upper": (1.0, 2.0)},
        {"lower": (math.nan,), "upper": (1.0,)},
        {"lower": (0.0,), "upper": (1.0,), "max_step_arm": 0.0},
        {"lower": (0.0,), "upper": (1.0,), "max_step_gripper": math.inf},
        {"lower": (0.0,), "upper": (1.0,), "gripper_indices": (3,)},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    base = {"max_step_arm": 0.1, "max_step_gripper": 0.1, "gripper_indices": ()}
    with pytest.raises(ValueError):
        SafetyConfig(**{**base, **kwargs})


def test_from_named_limits_orders_by_protocol_and_refuses_gaps() -> None:
    limits = {name: (-float(i) - 1, float(i) + 1) for i, name in enumerate(JOINT_NAMES)}
    cfg = SafetyConfig.from_named_limits(dict(reversed(list(limits.items()))), 0.1, 0.02)
    assert cfg.upper == tuple(float(i) + 1 for i in range(ACTION_DIM))
    assert cfg.gripper_indices == (7, 15) and cfg.max_step[7] == 0.02 and cfg.max_step[0] == 0.1
    del limits["right_joint3"]
    with pytest.raises(ValueError, match="right_joint3"):
        SafetyConfig.from_named_limits(limits, 0.1, 0.02)
    with pytest.raises(ValueError, match="unknown"):
        SafetyConfig.from_named_limits({**limits, "right_joint3": (0, 1), "tail": (0, 1)}, 0.1, 0.02)
