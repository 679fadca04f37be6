"""Scripted experts solve every implemented task; detectors agree with the plan; mistakes hurt."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sim_rollouts import Rollout, RolloutCache, expert_rollout

from lwd_sim import ExpertConfig, ScriptedExpert, make_env
from lwd_sim.tasks import IMPLEMENTED_TASKS, make_task

LONG = {"gongfu_tea", "fruit_juice", "cocktail", "shoebox"}


def _check_detectors(r: Rollout) -> None:
    assert all(b >= a for a, b in itertools.pairwise(r.indices)), "subtask index must be monotone"
    if r.info["success"]:
        assert r.info["subtask_index"] == r.info["num_subtasks"]
    else:
        assert r.info["subtask_index"] < r.info["num_subtasks"]


def test_all_eight_tasks_implemented() -> None:
    from lwd_protocol.tasks import TASK_NAMES

    assert IMPLEMENTED_TASKS == TASK_NAMES


@pytest.mark.parametrize("task", IMPLEMENTED_TASKS)
def test_expert_solves_task(task: str, rollouts: RolloutCache) -> None:
    seeds = range(3) if task in LONG else range(8)
    results = [rollouts.clean(task, s) for s in seeds]
    for r in results:
        _check_detectors(r)
    rate = np.mean([r.info["success"] for r in results])
    assert rate >= 0.95, [(r.info["subtask_index"], r.info["failure_reason"], r.info["length"]) for r in results]
    if task in LONG:
        assert min(r.info["length"] for r in results) >= 300, "long-horizon tasks must be long"


@pytest.mark.slow
@pytest.mark.parametrize("task", IMPLEMENTED_TASKS)
def test_expert_success_sweep(task: str) -> None:
    results = [expert_rollout(task, s) for s in range(100, 130)]
    for r in results:
        _check_detectors(r)
    assert np.mean([r.info["success"] for r in results]) >= 0.95


@pytest.mark.parametrize("task", IMPLEMENTED_TASKS)
def test_injected_mistake_fails(task: str, rollouts: RolloutCache) -> None:
    """Each failure-inducing mistake, injected at its earliest subtask, costs the episode.

    A stalled expert (a skipped step it can never come back to) is cut at the clean episode's
    length + 300 steps: within that budget it must not have succeeded.
    """
    kinds = [k for k in ("wrong_object", "skip") if make_task(task).mistake_subtasks(k)]
    assert kinds, f"{task} offers no failure-inducing mistake"
    clean = rollouts.clean(task, 0)
    assert clean.info["success"]
    for kind in kinds:
        first = min(make_task(task).mistake_subtasks(kind))
        cfg = ExpertConfig(mistake=kind, mistake_subtask=first, seed=1)
        r = expert_rollout(task, 0, cfg, max_steps=clean.info["length"] + 300)
        _check_detectors(r)
        assert not r.info["success"], kind
        assert r.info["score"] < clean.info["score"], kind
        assert r.info["failed"] or r.info["timeout"], kind
        assert not any(r.rewards), "no reward without success"


def test_expert_takes_over_from_arbitrary_state() -> None:
    """The expert is reactive: after random actions (a 'policy' gone astray) it still finishes."""
    env = make_env("restocking", seed=5)
    rng = np.random.default_rng(0)
    expert = ScriptedExpert(env)
    for _ in range(40):
        env.step(expert.act() + rng.normal(0, 0.15, 16))
    for _ in range(400):
        _, _, term, trunc, info = env.step(expert.act())
        if term or trunc:
            break
    assert info["success"], info
