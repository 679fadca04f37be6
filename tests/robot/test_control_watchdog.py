"""StalenessWatchdog: per-source ages, never-received sources, clock mismatch, inference exhaustion."""

from __future__ import annotations

import math

import pytest

from lwd_fleet.control.watchdog import JOINT_STATES, StalenessWatchdog, WatchdogConfig

SOURCES = ("head", "left_wrist", "right_wrist", JOINT_STATES)


def fed(now: float) -> StalenessWatchdog:
    wd = StalenessWatchdog()
    for s in SOURCES:
        wd.update(s, now)
    return wd


def test_fresh_sources_are_ok() -> None:
    wd = fed(10.0)
    st = wd.check(10.05)
    assert st.ok and not st.hold and st.reason == "" and st.stale == ()


def test_never_received_sources_hold() -> None:
    wd = StalenessWatchdog()
    wd.update("head", 1.0)
    st = wd.check(1.0)
    assert st.hold
    assert set(st.stale) == {"left_wrist", "right_wrist", JOINT_STATES}
    assert "left_wrist camera never received" in st.reason


def test_stale_camera_reason_names_it_with_age() -> None:
    wd = fed(10.0)
    for s in ("left_wrist", "right_wrist", JOINT_STATES):
        wd.update(s, 10.4)
    st = wd.check(10.41)
    assert st.stale == ("head",)
    assert st.reason == "watchdog: head camera stale 0.41 s (max 0.20 s)"


def test_joint_states_have_their_own_max_age_and_reordering_does_not_rejuvenate() -> None:
    wd = fed(10.0)
    for s in ("head", "left_wrist", "right_wrist"):
        wd.update(s, 10.1)
    wd.update(JOINT_STATES, 9.0)  # late, reordered message: ignored
    wd.update(JOINT_STATES, math.nan)
    assert wd.check(10.15).stale == (JOINT_STATES,)


def test_future_stamp_is_clock_mismatch() -> None:
    wd = fed(10.0)
    wd.update("head", 11.0)
    st = wd.check(10.01)
    assert st.stale == ("head",) and "future" in st.reason


def test_inference_exhausted_with_grace() -> None:
    wd = StalenessWatchdog(WatchdogConfig(max_age_s={"head": 1.0}, inference_grace_s=0.1))
    wd.update("head", 0.0)
    wd.report_inference(True, 0.0)
    assert wd.check(0.05).ok
    wd.report_inference(True, 0.12)  # still behind: the start time is kept
    st = wd.check(0.12)
    assert st.stale == ("inference",) and "inference behind" in st.reason
    wd.report_inference(False, 0.2)
    assert wd.check(0.2).ok


def test_unknown_source_and_bad_config() -> None:
    wd = StalenessWatchdog()
    with pytest.raises(KeyError):
        wd.update("tail_cam", 0.0)
    with pytest.raises(ValueError):
        WatchdogConfig(max_age_s={"head": 0.0})
    wd = fed(1.0)
    wd.forget()
    assert len(wd.check(1.0).stale) == len(SOURCES)
