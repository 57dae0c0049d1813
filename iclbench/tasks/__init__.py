"""The task registry: `get`, `select` and the `Task` objects of the suite (`SUITE_VERSION`)."""

from __future__ import annotations

import fnmatch

from iclbench.tasks.ar import AR
from iclbench.tasks.family import Family, Sample, Task
from iclbench.tasks.garg import Garg
from iclbench.tasks.kernel import Kernel
from iclbench.tasks.lasso import Lasso
from iclbench.tasks.linear import Linear
from iclbench.tasks.logistic import Logistic
from iclbench.tasks.selection import Select
from iclbench.tasks.spec import EvalSet, TaskSpec
from iclbench.tasks.suite import FINGERPRINTS, SPECS, SUITE_VERSION

FAMILIES: dict[str, Family] = {
    "linear": Linear(),
    "logistic": Logistic(),
    "lasso": Lasso(),
    "kernel": Kernel(),
    "ar": AR(),
    "select": Select(),
    "garg": Garg(),
}
TASKS: dict[str, Task] = {s.name: Task(s, FAMILIES[s.family]) for s in SPECS}


class UnknownTaskError(KeyError):
    """A task name or pattern that matches no task of the suite."""

    def __str__(self) -> str:
        return str(self.args[0])


def get(name: str) -> Task:
    """The task called `name` (for example "linear/kappa1")."""
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def select(patterns: list[str] | None = None) -> list[Task]:
    """Tasks matching any of the names, families or glob patterns, in suite order (all if none)."""
    if not patterns:
        return list(TASKS.values())
    chosen = set()
    for pattern in patterns:
        hits = [n for n, t in TASKS.items() if fnmatch.fnmatchcase(n, pattern) or t.spec.family == pattern]
        if not hits:
            raise UnknownTaskError(f"no task matches {pattern!r}; known tasks: {', '.join(TASKS)}")
        chosen.update(hits)
    return [t for n, t in TASKS.items() if n in chosen]


__all__ = [
    "EvalSet",
    "FAMILIES",
    "FINGERPRINTS",
    "SUITE_VERSION",
    "Sample",
    "TASKS",
    "Task",
    "TaskSpec",
    "UnknownTaskError",
    "get",
    "select",
]
