"""Task registry: one module per task of lwd_protocol.tasks.TASK_NAMES."""

from __future__ import annotations

import importlib
import importlib.util

from lwd_protocol.tasks import TASK_NAMES
from lwd_sim.tasks.base import Task

# Tasks with a sim implementation so far (the rest raise NotImplementedError on make_task).
IMPLEMENTED_TASKS: tuple[str, ...] = tuple(
    t for t in TASK_NAMES if importlib.util.find_spec(f"lwd_sim.tasks.{t}") is not None
)


def make_task(name: str) -> Task:
    if name not in TASK_NAMES:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    if name not in IMPLEMENTED_TASKS:
        raise NotImplementedError(f"task {name!r} has no sim implementation yet; available: {IMPLEMENTED_TASKS}")
    module = importlib.import_module(f"lwd_sim.tasks.{name}")
    return module.TASK_CLASS()


__all__ = ["IMPLEMENTED_TASKS", "Task", "make_task"]
