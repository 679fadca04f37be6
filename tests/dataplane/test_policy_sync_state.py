"""The replay floor policy sync persists: which order seqs may still be acted on, across restarts."""

from __future__ import annotations

from lwd_fleet.policy_sync.state import STATE_FILE, SyncState

A, B = "a" * 64, "b" * 64


def test_replay_rule_per_topic():
    st = SyncState()
    assert st.replay_problem("fleet", 5, A) is None  # nothing seen yet
    assert st.observe("fleet", 10, A) and not st.observe("fleet", 7, B)  # an older order never lowers the floor
    assert st.replay_problem("fleet", 10, A) is None  # the same retained order, re-delivered
    assert st.replay_problem("fleet", 11, B) is None
    assert "older than the last fleet order seen (seq 10)" in st.replay_problem("fleet", 9, A)
    assert "already used for a different manifest" in st.replay_problem("fleet", 10, B)
    assert st.replay_problem("robot", 9, A) is None  # topics have separate floors
    st.observe("robot", 20, B)
    assert st.clear("robot") and not st.clear("robot")
    assert "withdrawn since" in st.replay_problem("robot", 20, B)  # a pin replayed after an unpin
    assert st.observe("robot", 21, A) and st.replay_problem("robot", 21, A) is None  # a new pin re-arms it


def test_state_survives_restart_and_a_corrupt_file_falls_back_to_the_cache(tmp_path):
    st = SyncState()
    st.observe("fleet", 10, A)
    st.clear("robot")
    st.accept(4, A)
    st.save(tmp_path)
    again = SyncState.load(tmp_path, cached_versions=[2, 4])
    assert again == st
    (tmp_path / STATE_FILE).write_text('{"current_version": -3}')
    fallback = SyncState.load(tmp_path, cached_versions=[2, 7])
    assert fallback.current_version == 7 and fallback.seen_seq == {"fleet": 0, "robot": 0}
    assert not (tmp_path / STATE_FILE).exists() and len(list(tmp_path.glob(f"{STATE_FILE}.corrupt-*"))) == 1
    assert SyncState.load(tmp_path / "fresh", cached_versions=[]).current_version == 0
