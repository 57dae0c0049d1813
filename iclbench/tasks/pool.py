"""A model's declared pool of training tasks (Raventós et al. 2023, task diversity), as `Model.task_pool` holds it.

A model trained on a finite pool of tasks (`iclbench train --task-pool K --seed S`) declares
{"tasks": [...], "size": K, "seed": S}: for each task named, its training prompts' hidden w were rows of
`Task.task_pool(K, S)`. `iclbench run` then also scores it on in-pool prompts (`Task.pool_set(K, S)`, drawn on the
training stream, never the evaluation sets) and records them beside the task's scores, whose evaluation set,
with w drawn afresh, is the out-of-pool error. Fresh-draw verification also scores it on fresh in-pool prompts
(`Task.pool_set(K, S, verify_seed)`) and compares them with the public ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_POOL = 2**20
"""The largest pool declared or drawn (1,048,576 tasks): the harness draws the pool of a
declaration (K x d numbers) before it scores the in-pool prompts."""
MAX_SEED = 2**63
"""Pool seeds are integers from 0 to 2^63 - 1."""


@dataclass(frozen=True)
class TaskPool:
    """The pool of `size` tasks of seed `seed` of each task of `tasks`."""

    tasks: tuple[str, ...]
    size: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "size": self.size, "seed": self.seed}

    @classmethod
    def parse(cls, value: Any, where: str = "task_pool") -> TaskPool | None:
        """The declaration `value` (None, or a mapping of exactly tasks, size and seed) checked; a `ValueError` saying
        what is wrong otherwise. The tasks must be tasks of the suite whose family draws task vectors."""
        from iclbench.tasks import TASKS

        if value is None:
            return None
        whole = lambda v, hi: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < hi  # noqa: E731
        if not (isinstance(value, dict) and set(value) == {"tasks", "size", "seed"}
                and isinstance(value["tasks"], list) and 0 < len(value["tasks"]) <= len(TASKS)
                and all(isinstance(t, str) for t in value["tasks"])
                and whole(value["size"], MAX_POOL + 1) and value["size"] >= 1 and whole(value["seed"], MAX_SEED)):
            raise ValueError(f"{where} must be null or {{\"tasks\": [task names], \"size\": 1 to {MAX_POOL}, "
                             f"\"seed\": 0 to 2^63 - 1}}, got {str(value)[:200]}")
        if len(set(value["tasks"])) != len(value["tasks"]):
            raise ValueError(f"{where}: a task named twice in {value['tasks']}")
        for name in value["tasks"]:
            if name not in TASKS or not TASKS[name].family.pooled:
                pooled = [n for n, t in TASKS.items() if t.family.pooled]
                raise ValueError(f"{where}: {name!r} is not a task whose prompts can come from a pool "
                                 f"({', '.join(pooled)})")
        return cls(tuple(value["tasks"]), value["size"], value["seed"])
