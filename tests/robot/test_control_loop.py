"""ControlLoop arbitration without ROS: priorities, bumpless hand-over, e-stop latch, watchdog, and a
property test that no input sequence produces an out-of-limit or too-fast command."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwd_fleet.control.chunking import ActionChunk, ExecutorConfig
from lwd_fleet.control.loop import (
    ARM_LEFT,
    ARM_RIGHT,
    ControlLoop,
    HumanCommand,
    HumanCommandError,
    LoopConfig,
    Mode,
    Source,
)
from lwd_fleet.control.safety import SafetyConfig
from lwd_msgs.msg import ControlMode, ExecutedAction
from lwd_protocol.robot_spec import JOINT_NAMES

A, H, RATE = len(JOINT_NAMES), 30, 30.0
GRIP = [i for i, n in enumerate(JOINT_NAMES) if n.endswith("gripper")]
LO = np.array([0.0 if i in GRIP else -1.0 for i in range(A)])
HI = np.array([0.04 if i in GRIP else 1.0 for i in range(A)])
STEP = np.array([0.004 if i in GRIP else 0.05 for i in range(A)])
POSE = np.where(np.isin(np.arange(A), GRIP), 0.02, 0.1)


def make_loop(max_step_arm: float = 0.05, **kwargs) -> ControlLoop:
    safety = SafetyConfig(tuple(LO), tuple(HI), max_step_arm, 0.004)
    ex = kwargs.pop("executor", ExecutorConfig(request_lead_ticks=6, blend_steps=5, takeover_blend_steps=10))
    return ControlLoop(LoopConfig(safety=safety, executor=ex, rate_hz=RATE, **kwargs))


class Clocked:
    """Drives a loop like the node: one joint state (echo of the last command) per tick."""

    def __init__(self, loop: ControlLoop, pose: np.ndarray = POSE) -> None:
        self.loop, self.pose, self.tick = loop, pose.copy(), 0
        loop.joint_state(self.pose, 0.0, 0.0)

    def step(self, feed_state: bool = True, **kwargs):
        t = self.tick / RATE
        if feed_state:
            self.loop.joint_state(self.pose, t, t)
        out = self.loop.tick(self.tick, t, t, **kwargs)
        self.tick += 1
        if out is not None:
            self.pose = out.command
        return out

    def chunk(self, start: int, rows: np.ndarray, version: int = 1) -> bool:
        return self.loop.submit_chunk(ActionChunk(start, np.asarray(rows, np.float64), version))


def test_enum_values_match_the_messages() -> None:
    assert [Source.POLICY, Source.HUMAN, Source.HOLD] == [
        ExecutedAction.SOURCE_POLICY,
        ExecutedAction.SOURCE_HUMAN,
        ExecutedAction.SOURCE_HOLD,
    ]
    assert [Mode.POLICY, Mode.HUMAN, Mode.HOLD, Mode.ESTOP] == [
        ControlMode.POLICY,
        ControlMode.HUMAN,
        ControlMode.HOLD,
        ControlMode.ESTOP,
    ]
    assert (ARM_LEFT, ARM_RIGHT) == (ControlMode.ARM_LEFT, ControlMode.ARM_RIGHT)


def test_nothing_before_a_joint_state_then_hold_without_policy() -> None:
    loop = make_loop()
    assert loop.tick(0, 0.0, 0.0) is None
    c = Clocked(loop)
    out = c.step()
    assert out.mode is Mode.HOLD and out.source is Source.HOLD and out.reason == "no policy loaded"
    np.testing.assert_array_equal(out.command, POSE)


def test_policy_follows_the_chunk_within_limits_and_steps() -> None:
    c = Clocked(make_loop())
    c.loop.set_policy(1, {})
    out = c.step()
    assert out.request_inference and out.mode is Mode.POLICY and out.source is Source.HOLD
    target = POSE.copy()
    target[0], target[1], target[7] = 0.5, 3.0, 1.0  # joint 1 and the left gripper beyond the limits
    assert c.chunk(0, np.repeat(target[None], H, axis=0))
    outs = [c.step() for _ in range(25)]
    cmds = np.array([o.command for o in outs])
    assert all(o.source is Source.POLICY and o.policy_version == 1 for o in outs)
    assert np.all(cmds >= LO) and np.all(cmds <= HI)
    assert np.all(np.abs(np.diff(np.vstack([POSE, cmds]), axis=0)) <= STEP + 1e-12)
    expected = np.clip(target, LO, HI)
    np.testing.assert_allclose(cmds[-1], expected, atol=1e-12)
    # the takeover ramp: the first commanded row is 1/(L+1) of the way (L = takeover_blend_steps = 10)
    np.testing.assert_allclose(cmds[0, 2], POSE[2] + (target[2] - POSE[2]) / 11, atol=1e-12)
    assert any(o.request_inference for o in outs)  # the next chunk was requested before the plan ran out


def test_chunk_of_another_version_is_refused() -> None:
    c = Clocked(make_loop())
    c.loop.set_policy(2, {})
    c.step()
    assert not c.chunk(0, np.zeros((H, A)), version=1)
    assert "active is v2" in c.loop.executor.last_rejection


def test_stale_joint_states_hold_then_the_policy_replans() -> None:
    c = Clocked(make_loop(joint_state_max_age_s=0.1))
    c.loop.set_policy(1, {})
    c.step()
    rows = POSE[None] + np.arange(1, H + 1)[:, None] * 0.01
    c.chunk(0, rows)
    for _ in range(5):
        c.step()
    held = c.pose.copy()
    outs = [c.step(feed_state=False) for _ in range(8)]
    stale = [o for o in outs if o.mode is Mode.HOLD]
    assert stale and "joint_states stale" in stale[-1].reason and stale[-1].reason.startswith("watchdog: ")
    first_hold = outs.index(stale[0])
    np.testing.assert_array_equal(stale[-1].command, outs[first_hold - 1].command if first_hold else held)
    assert all(o.source is Source.HOLD for o in stale)
    back = c.step()  # fresh joint state: policy again, old plan discarded, fresh chunk requested
    assert back.mode is Mode.POLICY and back.source is Source.HOLD and back.request_inference
    assert not c.chunk(0, rows)  # conditioned before the restart: refused
    assert "before policy (re)start" in c.loop.executor.last_rejection


def test_exhausted_plan_holds_as_inference_behind() -> None:
    c = Clocked(
        make_loop(
            executor=ExecutorConfig(
                request_lead_ticks=2, blend_steps=0, takeover_blend_steps=0, request_timeout_ticks=100
            )
        )
    )
    c.loop.set_policy(1, {})
    c.step()
    c.chunk(0, np.repeat(POSE[None], H, axis=0))
    outs = [c.step() for _ in range(H + 2)]
    assert outs[-1].mode is Mode.HOLD and "inference behind" in outs[-1].reason
    # a late chunk resumes without a restart (the outstanding request is still honoured)
    assert c.chunk(outs[-1].tick, np.repeat(POSE[None], H, axis=0))
    assert c.step().source is Source.POLICY


def test_human_velocity_takeover_and_hand_back_are_bumpless() -> None:
    c = Clocked(make_loop(max_step_arm=0.5))  # a wide rate limit: it must not be what hides a jump
    c.loop.set_policy(1, {})
    c.step()
    drift = POSE[None] + np.arange(1, H + 1)[:, None] * 0.004
    c.chunk(0, drift)
    for _ in range(12):
        policy_out = c.step()
    assert policy_out.source is Source.POLICY
    before = policy_out.command.copy()
    names = [n for n in JOINT_NAMES if n.startswith("left_")]
    vel = np.zeros(len(names))
    vel[0] = 0.6  # rad/s on left_joint1
    human = []
    for _ in range(6):  # a short takeover: the old plan still has rows left when the human lets go
        c.loop.human(HumanCommand.parse(names, [], vel), wall_s=c.tick / RATE)
        human.append(c.step())
    assert all(o.mode is Mode.HUMAN and o.source is Source.HUMAN and o.human_arms == ARM_LEFT for o in human)
    assert human[0].intervention_active and human[0].intervention_count == 1 and human[0].policy_version == 0
    first = human[0].command
    np.testing.assert_allclose(first[0], before[0] + 0.6 / RATE, atol=1e-12)  # integrates from the commanded pose
    np.testing.assert_array_equal(first[1:], before[1:])  # everything else holds where the policy left it
    np.testing.assert_allclose(human[-1].command[0], before[0] + 6 * 0.6 / RATE, atol=1e-9)
    last_human = human[-1].command.copy()

    c.loop.human(None, wall_s=c.tick / RATE)  # explicit release
    back = c.step()  # the old plan is discarded (resuming it would jump 0.12 rad back): hold, request afresh
    assert back.mode is Mode.POLICY and back.source is Source.HOLD and back.request_inference
    np.testing.assert_array_equal(back.command, last_human)
    fresh = last_human[None] + np.arange(1, H + 1)[:, None] * 0.004  # replanned from the current state
    assert c.chunk(back.tick, fresh)
    resumed = [c.step() for _ in range(15)]
    cmds = np.vstack([last_human, [o.command for o in resumed]])
    assert np.max(np.abs(np.diff(cmds, axis=0))) < 0.01  # no jump back to the pre-takeover plan


def test_human_position_targets_ramp_in_then_track() -> None:
    c = Clocked(make_loop(max_step_arm=1.0, human_blend_steps=4))
    target = POSE.copy()
    target[3] = 0.9
    c.loop.human(HumanCommand.parse([], target, []), wall_s=0.0)
    outs = []
    for _ in range(6):
        outs.append(c.step())
        c.loop.human(HumanCommand.parse([], target, []), wall_s=c.tick / RATE)
    values = [o.command[3] for o in outs]
    gap = 0.9 - POSE[3]
    np.testing.assert_allclose(values[:5], POSE[3] + gap * np.arange(1, 6) / 5, atol=1e-12)  # linear ramp
    assert values[5] == 0.9 and outs[0].human_arms == ARM_LEFT | ARM_RIGHT


def test_lost_human_stream_holds_until_release() -> None:
    c = Clocked(make_loop(human_timeout_s=0.1))
    c.loop.set_policy(1, {})
    c.loop.human(HumanCommand.parse(["right_joint2"], [], [0.3]), wall_s=0.0)
    outs = [c.step() for _ in range(8)]  # no further commands: stale after 0.1 s
    assert outs[0].mode is Mode.HUMAN and outs[0].human_arms == ARM_RIGHT
    assert outs[-1].mode is Mode.HOLD and "teleop" in outs[-1].reason and outs[-1].intervention_active
    np.testing.assert_array_equal(outs[-1].command, outs[-2].command)
    c.loop.human(None, wall_s=c.tick / RATE)
    assert c.step().mode is Mode.POLICY


def test_estop_latches_over_everything_until_released() -> None:
    c = Clocked(make_loop())
    c.loop.set_policy(1, {})
    c.step()
    c.loop.engage_estop("test")
    c.loop.human(HumanCommand.parse([], POSE + 0.3, []), wall_s=c.tick / RATE)
    outs = [c.step() for _ in range(3)]
    assert all(o.mode is Mode.ESTOP and o.source is Source.HOLD for o in outs)
    assert all(np.array_equal(o.command, POSE) for o in outs) and "test" in outs[0].reason
    assert c.loop.release_estop() and not c.loop.release_estop()
    c.loop.human(HumanCommand.parse([], POSE + 0.3, []), wall_s=c.tick / RATE)
    assert c.step().mode is Mode.HUMAN


def test_episode_start_reseeds_from_the_measured_pose() -> None:
    c = Clocked(make_loop())
    for _ in range(3):
        c.step()
    c.loop.episode_started(stamp_s=10.0, wall_s=c.tick / RATE)
    reset_pose = POSE + 0.4  # the driver reset the scene: the arms are somewhere else now
    c.loop.joint_state(reset_pose, stamp_s=9.9, wall_s=c.tick / RATE)  # taken before the reset: ignored
    out = c.loop.tick(c.tick, 10.0, c.tick / RATE)
    assert out.mode is Mode.HOLD and "episode start" in out.reason and out.episode_step == 0
    c.loop.joint_state(reset_pose, stamp_s=10.01, wall_s=c.tick / RATE)
    out = c.loop.tick(c.tick + 1, 10.02, c.tick / RATE)
    np.testing.assert_array_equal(out.command, np.clip(reset_pose, LO, HI))
    assert out.episode_step == 1 and c.loop.in_episode


@pytest.mark.parametrize(
    ("names", "position", "velocity", "needle"),
    [
        (["left_joint9"], [0.1], [], "unknown joint"),
        (["left_joint1", "left_joint1"], [0.1, 0.2], [], "duplicate"),
        (["left_joint1"], [0.1, 0.2], [], "1 joint names but 2 positions"),
        (["left_joint1"], [], [math.nan], "non-finite"),
        ([], [0.0] * 3, [], "needs 16 positions"),
    ],
)
def test_bad_human_messages_are_named(names, position, velocity, needle) -> None:
    with pytest.raises(HumanCommandError, match=needle):
        HumanCommand.parse(names, position, velocity)


def test_human_message_forms() -> None:
    assert HumanCommand.parse([], [], []) is None  # explicit release
    full = HumanCommand.parse([], list(range(A)), [])
    assert full.position is not None and list(full.joints) == list(range(A))
    vel = HumanCommand.parse(["right_gripper"], [], [0.01])
    assert vel.velocity is not None and vel.arms == ARM_RIGHT
    hold = HumanCommand.parse(["left_joint3"], [], [])
    assert hold.position is None and hold.velocity is None and hold.arms == ARM_LEFT


# ------------------------------------------------------------------------------ properties
any_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e300, 1e-300]))
joint_names = st.lists(st.sampled_from((*JOINT_NAMES, "bogus")), min_size=0, max_size=A)


@st.composite
def operations(draw: st.DrawFn) -> list[tuple]:
    ops = []
    for _ in range(draw(st.integers(5, 40))):
        kind = draw(
            st.sampled_from(
                [
                    "tick",
                    "tick",
                    "tick",
                    "human_pos",
                    "human_vel",
                    "release",
                    "chunk",
                    "estop",
                    "unestop",
                    "stale",
                    "policy",
                ]
            )
        )
        if kind in ("human_pos", "human_vel"):
            names = draw(joint_names)
            n = draw(st.sampled_from([len(names), len(names) + 1, A]))
            ops.append((kind, names, draw(st.lists(any_float, min_size=n, max_size=n))))
        elif kind == "chunk":
            rows = draw(st.sampled_from([H, H - 1]))
            fill = draw(any_float)
            spread = draw(st.floats(-5, 5))
            ops.append((kind, draw(st.integers(-5, 3)), rows, fill, spread))
        elif kind in ("tick", "stale"):
            ops.append((kind, draw(st.integers(1, 6))))
        else:
            ops.append((kind,))
    return ops


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations())
def test_no_input_sequence_leaves_the_limits_or_exceeds_a_step(ops: list[tuple]) -> None:
    c = Clocked(make_loop(human_timeout_s=0.1))
    outputs = [c.step()]
    for op in ops:
        kind = op[0]
        if kind in ("human_pos", "human_vel"):
            _, names, values = op
            try:
                cmd = HumanCommand.parse(
                    names, values if kind == "human_pos" else [], values if kind == "human_vel" else []
                )
            except HumanCommandError:
                continue
            c.loop.human(cmd, wall_s=c.tick / RATE)
        elif kind == "release":
            c.loop.human(None, wall_s=c.tick / RATE)
        elif kind == "chunk":
            _, offset, rows, fill, spread = op
            with np.errstate(all="ignore"):
                actions = np.full((rows, A), fill) + np.linspace(0, spread, A)[None]
            c.chunk(max(0, c.tick + offset), actions, version=c.loop.policy_version or 1)
        elif kind == "estop":
            c.loop.engage_estop("prop")
        elif kind == "unestop":
            c.loop.release_estop()
        elif kind == "policy":
            c.loop.set_policy(1, {})
        else:
            for _ in range(op[1]):
                outputs.append(c.step(feed_state=kind == "tick"))
    cmds = np.array([o.command for o in outputs])
    assert np.all(np.isfinite(cmds))
    assert np.all(cmds >= LO) and np.all(cmds <= HI)
    assert np.all(np.abs(np.diff(cmds, axis=0)) <= STEP + 1e-12)
    for o in outputs:
        assert (o.source is Source.POLICY) == (o.policy_version > 0)
