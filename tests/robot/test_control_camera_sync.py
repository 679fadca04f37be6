"""CameraSynchronizer: newest consistent triple, spread limit, missing/stale cameras by name."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwd_fleet.control.camera_sync import CameraSynchronizer, SyncConfig

CAMS = ("head", "left_wrist", "right_wrist")


def test_missing_cameras_are_named() -> None:
    sync = CameraSynchronizer()
    sync.add("head", 1.0, "h")
    res = sync.latest(1.0)
    assert not res.ok and res.missing == ("left_wrist", "right_wrist")
    assert "missing left_wrist, right_wrist" in res.reason


def test_newest_consistent_triple_is_chosen_over_newest_frames() -> None:
    sync = CameraSynchronizer(SyncConfig(max_spread_s=0.020))
    # 30 Hz streams with different phases; right_wrist's newest frame has not arrived yet
    for k in range(3):
        t = 1.0 + k / 30
        sync.add("head", t, f"h{k}")
        sync.add("left_wrist", t + 0.005, f"l{k}")
        if k < 2:
            sync.add("right_wrist", t + 0.010, f"r{k}")
    res = sync.latest(1.08)
    assert res.ok and res.is_new
    assert dict(res.frames) == {"head": "h1", "left_wrist": "l1", "right_wrist": "r1"}
    assert res.spread_s == pytest.approx(0.010)
    again = sync.latest(1.081)
    assert again.ok and not again.is_new  # same triple: the caller can skip re-inference
    sync.add("right_wrist", 1.0 + 2 / 30 + 0.010, "r2")
    res = sync.latest(1.09)
    assert dict(res.frames) == {"head": "h2", "left_wrist": "l2", "right_wrist": "r2"} and res.is_new


def test_no_set_within_spread() -> None:
    sync = CameraSynchronizer(SyncConfig(max_spread_s=0.020))
    sync.add("head", 1.00, 0)
    sync.add("left_wrist", 1.05, 0)
    sync.add("right_wrist", 1.10, 0)
    res = sync.latest(1.1)
    assert not res.ok and "within 20 ms" in res.reason and "100 ms" in res.reason


def test_stale_camera_is_named() -> None:
    sync = CameraSynchronizer(SyncConfig(max_age_s=0.2))
    for c in CAMS:
        sync.add(c, 1.0, c)
    sync.add("head", 1.5, "new head")
    sync.add("right_wrist", 1.5, "new right")
    res = sync.latest(1.55)
    assert not res.ok and res.stale == ("left_wrist",) and "stale left_wrist" in res.reason


def test_consistent_set_too_old_is_refused() -> None:
    sync = CameraSynchronizer(SyncConfig(max_age_s=0.2, max_spread_s=0.01))
    for c in CAMS:
        sync.add(c, 1.0, c)
    sync.add("head", 1.15, "h")
    sync.add("left_wrist", 1.17, "l")
    sync.add("right_wrist", 1.19, "r")  # newest frames fresh but 40 ms apart
    res = sync.latest(1.25)
    assert not res.ok and "old" in res.reason


def test_out_of_order_and_buffer_limit() -> None:
    sync = CameraSynchronizer(SyncConfig(buffer_len=2))
    with pytest.raises(KeyError):
        sync.add("tail", 0.0, None)
    for c in CAMS:
        sync.add(c, 2.0, f"{c}2")
        sync.add(c, 1.0, f"{c}1")  # late arrival, inserted before
        sync.add(c, 3.0, f"{c}3")  # buffer keeps 2.0 and 3.0
    res = sync.latest(3.0)
    assert res.ok and res.stamps == {c: 3.0 for c in CAMS}


def test_spread_boundary_is_inclusive_despite_float_rounding() -> None:
    sync = CameraSynchronizer(SyncConfig(max_spread_s=0.03, max_age_s=1.0))
    sync.add("head", 0.3, 0)  # 0.3 + 0.03 == 0.32999999999999996 < 0.33 in floats
    sync.add("left_wrist", 0.33, 0)
    sync.add("right_wrist", 0.31, 0)
    assert sync.latest(0.35).ok


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(CAMS), st.integers(0, 200)), min_size=1, max_size=30), st.integers(0, 30))
def test_choice_is_optimal_among_buffered_frames(events: list[tuple[str, int]], spread_ms: int) -> None:
    cfg = SyncConfig(max_spread_s=spread_ms / 1000, max_age_s=10.0, buffer_len=4)
    sync = CameraSynchronizer(cfg)
    buffers: dict[str, list[float]] = {c: [] for c in CAMS}
    for cam, ms in events:
        sync.add(cam, ms / 1000, (cam, ms))
        buffers[cam] = sorted(set(buffers[cam]) | {ms / 1000})[-4:]
    res = sync.latest(0.2)
    feasible = [
        combo
        for combo in itertools.product(*(buffers[c] for c in CAMS))
        if combo and max(combo) - min(combo) <= cfg.max_spread_s + 1e-12
    ]
    if not feasible:
        assert not res.ok
        return
    assert res.ok
    got = tuple(res.stamps[c] for c in CAMS)
    assert max(got) - min(got) <= cfg.max_spread_s + 1e-12
    assert min(got) == pytest.approx(max(min(c) for c in feasible))
    assert all(res.frames[c] == (c, round(res.stamps[c] * 1000)) for c in CAMS)
