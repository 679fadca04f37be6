"""Same-state branches: the split wrapper perturbs exactly the branched rows at exactly one query, and
the ranking pairs successful with failed copies at the split tick only."""

from __future__ import annotations

import numpy as np
import pytest

from lwd_learner.branching import BranchAt, BranchConfig, BranchGroup, branch_ranking, split_groups, split_rows
from lwd_learner.dataset import EpisodeArrays, compute_normalizer
from lwd_protocol.episode import EpisodeSource, Outcome

HORIZON, LENGTH, TICK = 5, 12, 4


def test_branch_at_offsets_every_row_but_the_first_at_one_query() -> None:
    base = np.linspace(0, 1, 4 * 30 * 3, dtype=np.float32).reshape(4, 30, 3)
    obs = np.zeros((4, 6), np.float32)
    wrapped = BranchAt(lambda o, n: base, query=1, scale=1.0, seed=0)
    np.testing.assert_array_equal(wrapped(obs, None), base)  # query 0: untouched
    assert wrapped.state_spread is None
    obs[2, 5] = 0.25
    split = wrapped(obs, None)
    assert wrapped.state_spread == 0.25
    np.testing.assert_array_equal(split[0], base[0])
    assert np.all(np.abs(split[1:] - base[1:]).max(axis=(1, 2)) > 0.05)
    np.testing.assert_array_equal(wrapped(obs, None), base)  # query 2: untouched again


def test_branch_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="width"):
        BranchConfig(scenes=4, width=1)
    with pytest.raises(ValueError, match="first_query"):
        BranchConfig(scenes=4, first_query=5, last_query=5)
    with pytest.raises(ValueError, match="scale"):
        BranchConfig(scenes=4, scale=-1.0)


def _copy(group: int, copy: int, split_value: float, other_value: float) -> EpisodeArrays:
    """Joint-position episode of one group: states shared by the group; joint 0's commanded target is
    ``split_value`` at the split tick and ``other_value`` everywhere else."""
    rng = np.random.default_rng(group)
    states = np.cumsum(rng.normal(0, 0.05, (LENGTH, 16)), axis=0)
    actions = states + 0.01
    actions[:, 0] = other_value
    actions[TICK, 0] = split_value
    actions[:, [7, 15]] = 0.04
    return EpisodeArrays(
        "restocking", states, actions, np.zeros(LENGTH), Outcome.SUCCESS, EpisodeSource.ROLLOUT,
        episode_id=f"g{group}-c{copy}",
    )  # fmt: skip


def test_branch_ranking_counts_success_over_failure_pairs_at_the_split() -> None:
    # copy b's joint-0 target at the split grows with b and is reversed on every other tick, so a
    # ranking read anywhere but the split tick gives the opposite answer
    successes = [
        [False, True, True],  # the two higher chunks win: 2 of 2 pairs ordered
        [True, False, False],  # the lowest wins: 0 of 2
        [False, False, True],  # the highest wins: 2 of 2
        [True, True, True],  # not mixed: skipped
        [False, True, False],  # split states differ (spread > 0): skipped
    ]
    episodes, groups = [], []
    for g, success in enumerate(successes):
        episodes += [_copy(g, b, split_value=0.1 * b, other_value=-0.1 * b) for b in range(3)]
        spread = 0.5 if g == 4 else 0.0
        groups.append(BranchGroup(seed=g, query=1, tick=TICK, state_spread=spread, success=success))
    norm = compute_normalizer(episodes, state_source="joint_positions", horizon=HORIZON)

    def q_first_target(obs, actions):
        return np.asarray(actions)[:, 0, 0]  # normalised joint-0 target of the chunk's first tick

    rows = split_rows(norm, episodes, groups, gamma=0.99, horizon=HORIZON)
    assert [r.success.tolist() for r in rows] == successes[:3]  # the mixed groups with identical splits
    result = branch_ranking(q_first_target, rows)
    assert result["pairs"] == 6 and result["mixed_groups"] == 3
    assert result["agreement"] == pytest.approx(4 / 6)
    reversed_q = branch_ranking(lambda o, a: -q_first_target(o, a), rows)
    assert reversed_q["agreement"] == pytest.approx(2 / 6)
    blind = branch_ranking(lambda o, a: np.zeros(len(a)), rows)
    assert blind["agreement"] == 0.0  # ties never count as ordered
    assert branch_ranking(q_first_target, [])["agreement"] is None


def test_branch_ranking_refuses_copies_that_share_an_episode_id() -> None:
    episodes = [_copy(0, 0, 0.0, 0.0), _copy(0, 0, 0.1, 0.0)]
    norm = compute_normalizer(episodes, state_source="joint_positions", horizon=HORIZON)
    groups = [BranchGroup(seed=0, query=1, tick=TICK, state_spread=0.0, success=[True, False])]
    with pytest.raises(ValueError, match="share an episode_id"):
        split_rows(norm, episodes, groups, 0.99, HORIZON)


def test_split_groups_holds_out_whole_groups_from_the_end() -> None:
    groups = [BranchGroup(seed=g, query=1, tick=TICK, state_spread=0.0, success=[True, False]) for g in range(4)]
    episodes = [_copy(g, b, 0.0, 0.0) for g in range(4) for b in range(2)]
    (train_eps, train_groups), (held_eps, held_groups) = split_groups(episodes, groups, held_out=0.25)
    assert [g.seed for g in train_groups] == [0, 1, 2] and [g.seed for g in held_groups] == [3]
    assert [e.episode_id for e in held_eps] == ["g3-c0", "g3-c1"] and len(train_eps) == 6
    (all_eps, _), (none, no_groups) = split_groups(episodes, groups, held_out=0.0)
    assert len(all_eps) == 8 and none == [] and no_groups == []
    with pytest.raises(ValueError, match="equal groups"):
        split_groups(episodes[:-1], groups, 0.25)
    with pytest.raises(ValueError, match="held_out"):
        split_groups(episodes, groups, 1.0)
