"""The task registry: names every side uses for the paper's eight-task suite.

Grocery tasks are scored by binary success; long-horizon tasks by the fraction of subtasks
completed (paper Table I). Offline TD uses n=10 chunk steps on long-horizon tasks, 1 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TaskGroup(str, Enum):
    GROCERY = "grocery"
    LONG_HORIZON = "long_horizon"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    group: TaskGroup
    title: str

    @property
    def is_long_horizon(self) -> bool:
        return self.group is TaskGroup.LONG_HORIZON


TASKS: tuple[TaskInfo, ...] = (
    TaskInfo("restocking", TaskGroup.GROCERY, "Restocking"),
    TaskInfo("misplaced_correction", TaskGroup.GROCERY, "Misplaced-item Correction"),
    TaskInfo("freezer", TaskGroup.GROCERY, "Freezer (with door)"),
    TaskInfo("open_cooler", TaskGroup.GROCERY, "Open-Cooler (carton)"),
    TaskInfo("gongfu_tea", TaskGroup.LONG_HORIZON, "Gongfu Tea"),
    TaskInfo("fruit_juice", TaskGroup.LONG_HORIZON, "Fruit Juice"),
    TaskInfo("cocktail", TaskGroup.LONG_HORIZON, "Cocktail"),
    TaskInfo("shoebox", TaskGroup.LONG_HORIZON, "Shoebox"),
)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
_BY_NAME = {t.name: t for t in TASKS}


def task_info(name: str) -> TaskInfo:
    """Look up a task; raise KeyError listing the known names if it is unknown."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}") from None
