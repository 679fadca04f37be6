"""ChunkExecutor: scheduling, alignment of late chunks, cross-fade, hold and bumpless takeover."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwd_fleet.control.chunking import (
    ActionChunk,
    ChunkExecutor,
    ExecutorConfig,
    ExecutorStatus,
    lead_ticks_for_latency,
)

H, A = 30, 16


def ramp_chunk(start: int, version: int = 1, offset: float = 0.0) -> ActionChunk:
    """Row i = (start + i) * 0.01 + offset on every joint: the value tells which tick it is for."""
    rows = (start + np.arange(H, dtype=np.float64))[:, None] * 0.01 + offset
    return ActionChunk(start, np.repeat(rows, A, axis=1), version)


def const_chunk(start: int, value: float, version: int = 1) -> ActionChunk:
    return ActionChunk(start, np.full((H, A), value), version)


def test_no_chunk_holds_and_requests_once_until_timeout() -> None:
    ex = ChunkExecutor(ExecutorConfig(request_timeout_ticks=4))
    steps = [ex.step(t) for t in range(9)]
    assert all(s.hold and s.status is ExecutorStatus.NO_CHUNK for s in steps)
    assert [s.tick for s in steps if s.request_inference] == [0, 4, 8]
    assert steps[0].reason == "no action chunk yet"
    assert any("re-requesting" in e for e in steps[4].events)


def test_late_chunk_is_aligned_by_start_step() -> None:
    ex = ChunkExecutor(ExecutorConfig(blend_steps=0, takeover_blend_steps=0))
    assert ex.step(0).request_inference
    ex.step(1)
    ex.step(2)
    assert ex.submit(ramp_chunk(0))  # conditioned on tick 0, arrives before tick 3
    s = ex.step(3)
    assert s.status is ExecutorStatus.RUNNING and s.policy_version == 1
    np.testing.assert_allclose(s.action, 0.03)  # row 3, rows 0..2 dropped as stale
    assert s.remaining == H - 4
    assert any("3 stale rows dropped" in e for e in s.events)
    # skipped ticks skip rows
    np.testing.assert_allclose(ex.step(7).action, 0.07)


def test_request_fires_when_lead_rows_remain_and_tail_then_hold_inference_behind() -> None:
    lead = 5
    ex = ChunkExecutor(ExecutorConfig(request_lead_ticks=lead, blend_steps=0, request_timeout_ticks=100))
    ex.step(0)
    ex.submit(ramp_chunk(0))
    requests = []
    for t in range(1, H + 3):
        s = ex.step(t)
        if s.request_inference:
            requests.append((t, s.remaining))
        if t < H:
            np.testing.assert_allclose(s.action, t * 0.01)
        else:  # chunk exhausted, the next one never came: hold and say why
            assert s.hold and s.status is ExecutorStatus.INFERENCE_BEHIND
            assert "inference behind" in s.reason
    assert requests == [(H - 1 - lead, lead)]  # exactly once, when `lead` rows remained


def test_entirely_stale_chunk_is_dropped() -> None:
    ex = ChunkExecutor(ExecutorConfig(blend_steps=0))
    ex.step(0)
    ex.submit(ramp_chunk(0))
    ex.step(1)
    assert ex.submit(ramp_chunk(2, version=2))
    s = ex.step(2 + H)  # arrives after all of its rows' ticks
    assert ex.stale_chunks_dropped == 1 and any("dropped stale" in e for e in s.events)
    assert s.status is ExecutorStatus.INFERENCE_BEHIND and s.policy_version == 1


def test_cross_fade_is_linear_over_the_overlap() -> None:
    L = 5
    ex = ChunkExecutor(ExecutorConfig(blend_steps=L))
    ex.step(0)
    ex.submit(const_chunk(0, 0.0))
    for t in range(1, 10):
        ex.step(t)
    assert ex.submit(const_chunk(8, 1.0, version=2))  # arrives at tick 10
    out = [ex.step(t) for t in range(10, 10 + L + 2)]
    values = [s.action[0] for s in out]
    np.testing.assert_allclose(values, [(j + 1) / (L + 1) for j in range(L)] + [1.0, 1.0])
    assert [s.status for s in out[:L]] == [ExecutorStatus.BLENDING] * L
    assert out[L].status is ExecutorStatus.RUNNING and out[0].policy_version == 2


def test_blend_after_exhaustion_starts_from_held_pose() -> None:
    ex = ChunkExecutor(ExecutorConfig(blend_steps=3, request_timeout_ticks=100))
    ex.step(0)
    ex.submit(const_chunk(0, 0.5))
    for t in range(1, H + 4):
        ex.step(t)  # exhausted at tick H: holding 0.5
    ex.submit(const_chunk(H + 2, 1.5, version=2))
    first = ex.step(H + 4)
    assert first.action[0] == pytest.approx(0.5 + 1.0 / 4)


def test_takeover_reset_is_bumpless_and_drops_pre_takeover_chunks() -> None:
    L = 10
    ex = ChunkExecutor(ExecutorConfig(takeover_blend_steps=L))
    ex.step(0)
    ex.submit(const_chunk(0, 0.0))
    for t in range(1, 5):
        ex.step(t)
    # human drives ticks 5..49; policy resumes at 50 from the human's last command
    human_pose = np.linspace(-1, 1, A)
    in_flight = const_chunk(40, 9.0)  # conditioned while the human was driving
    ex.reset(50, human_pose)
    assert not ex.submit(in_flight) and "before policy (re)start" in ex.last_rejection
    s = ex.step(50)
    assert s.hold and s.request_inference
    ex.submit(const_chunk(50, 2.0, version=3))
    s = ex.step(52)
    expected_first = human_pose + (2.0 - human_pose) / (L + 1)
    np.testing.assert_allclose(s.action, expected_first)
    prev = s.action
    for t in range(53, 53 + L + 1):
        a = ex.step(t).action
        assert np.all(np.abs(a - prev) <= np.abs(2.0 - human_pose) / (L + 1) + 1e-12)
        prev = a
    np.testing.assert_allclose(prev, 2.0)


def test_chunk_validation_and_ordering() -> None:
    ex = ChunkExecutor()
    assert not ex.submit(ActionChunk(0, np.zeros((H - 1, A))))
    assert "shape" in ex.last_rejection
    bad = np.zeros((H, A))
    bad[3, 4] = np.nan
    assert not ex.submit(ActionChunk(0, bad)) and "non-finite" in ex.last_rejection
    assert ex.submit(const_chunk(5, 1.0))
    assert not ex.submit(const_chunk(4, 1.0)) and "older than the pending" in ex.last_rejection
    assert ex.submit(const_chunk(6, 2.0))  # newer pending replaces older
    ex.step(6)
    assert not ex.submit(const_chunk(6, 3.0)) and "not newer" in ex.last_rejection
    with pytest.raises(ValueError):
        ex.step(6)


def test_chunk_conditioned_on_future_tick_waits() -> None:
    ex = ChunkExecutor(ExecutorConfig(blend_steps=0))
    ex.submit(ramp_chunk(3))
    assert ex.step(2).hold
    np.testing.assert_allclose(ex.step(3).action, 0.03)


def test_config_helpers() -> None:
    assert lead_ticks_for_latency(0.1, 30.0, 2) == 5
    assert lead_ticks_for_latency(0.0, 30.0, 0) == 1
    assert ExecutorConfig.for_latency(2.0).request_lead_ticks == H - 1
    with pytest.raises(ValueError):
        ExecutorConfig(request_lead_ticks=H)
    with pytest.raises(ValueError):
        lead_ticks_for_latency(float("nan"))


@settings(max_examples=60, deadline=None)
@given(
    latencies=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    lead=st.integers(1, 12),
    blend=st.integers(0, 8),
    values=st.lists(st.floats(-3, 3), min_size=12, max_size=12),
)
def test_random_latencies_invariants(latencies: list[int], lead: int, blend: int, values: list[float]) -> None:
    """Served requests come back after random delays: every action stays in the convex hull of the
    chunk values and the start pose (blending never overshoots), and hold happens exactly when the
    status says there is no plan for this tick."""
    start_pose = np.zeros(A)
    ex = ChunkExecutor(
        ExecutorConfig(request_lead_ticks=lead, blend_steps=blend, takeover_blend_steps=blend), start_pose=start_pose
    )
    inflight: list[tuple[int, int]] = []  # (arrival tick, conditioned tick)
    seen = [0.0]
    served = 0
    for t in range(200):
        for arrival, cond in [x for x in inflight if x[0] <= t]:
            inflight.remove((arrival, cond))
            value = values[served % len(values)]
            served += 1
            seen.append(value)
            ex.submit(const_chunk(cond, value))
        s = ex.step(t)
        if s.request_inference:
            inflight.append((t + 1 + latencies[len(inflight) % len(latencies)], t))
        assert (s.action is None) == (s.status in (ExecutorStatus.NO_CHUNK, ExecutorStatus.INFERENCE_BEHIND))
        if s.action is not None:
            assert min(seen) - 1e-12 <= s.action.min() and s.action.max() <= max(seen) + 1e-12
    assert served > 0
