"""Optimizers given a budget of k steps, each budget with its own tuned step: the leaderboard's comparators.

A transformer's k layers compare with the best k-step schedule of a constant step of GD, ISTA and FISTA: the
step size (GD) or multiple c of the per-prompt step 1/L (ISTA, FISTA) tuned for exactly k steps on the
training stream, per task and prompt length, for every k up to `MAX_BUDGET` (`tune_steps`, stored in
`tuned_steps.json`). `<optimizer>@<k>` runs k steps; its step j <= k (its per-step curve) is j steps at the
value tuned for j, so the curve of `gd@16` gives every shorter budget too. Newton and newton3 have no step to
tune: `newton@<k>` and `newton3@<k>` are their first k steps.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from iclbench import Batch, Model, Prediction, TaskSpec
from iclbench.baselines import gd, newton, proximal

MAX_BUDGET = 16
"""Every budget from 1 to this one is tuned."""
COMPARATOR_BUDGETS = (1, 4, 16)
"""The budgets of the ranked comparators (steps = layers)."""
OPTIMIZERS = ("gd", "ista", "fista")
FAMILIES = {"gd": gd.FAMILIES, "ista": ("linear", "lasso"), "fista": ("linear", "lasso")}
STEPS_FILE = Path(__file__).with_name("tuned_steps.json")


def document(found: dict[str, Any]) -> str:
    """The text of `STEPS_FILE` for the search `found` (`tune_steps.search`): JSON, one prompt length a line."""
    head = {k: v for k, v in found.items() if k not in ("values", "tuning_rel_err_db")}
    parts = ["{\n " + ",\n ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in head.items())]
    for key in ("values", "tuning_rel_err_db"):
        rows = [
            f'  {json.dumps(f"{o} {t} {n}")}: {json.dumps(v)}'
            for o, by_task in found[key].items()
            for t, by_n in by_task.items()
            for n, v in by_n.items()
        ]
        parts.append(f',\n "{key}": {{\n' + ",\n".join(rows) + "\n }")
    return "".join(parts) + "\n}\n"


def load_values(path: Path = STEPS_FILE) -> dict[str, dict[str, dict[int, list[float]]]]:
    """The tuned values, {optimizer: {task: {n: [value for 1, 2, ..., MAX_BUDGET steps]}}}."""
    doc = json.loads(path.read_text())
    out: dict[str, dict[str, dict[int, list[float]]]] = {}
    for key, values in doc["values"].items():
        optimizer, task, n = key.split(" ")
        if len(values) != MAX_BUDGET:
            raise ValueError(f"{path}: {key} has {len(values)} values, one per budget 1..{MAX_BUDGET} expected")
        out.setdefault(optimizer, {}).setdefault(task, {})[int(n)] = [float(v) for v in values]
    return out


class Tuned(Model):
    """`budget` steps of an optimizer; its step k is k steps at the value tuned for exactly k steps. Tasks and
    lengths without tuned values are not supported."""

    optimizer = "gd"
    budget = MAX_BUDGET

    def __init__(self) -> None:
        self.values = load_values()[self.optimizer]

    def supports(self, task: TaskSpec) -> bool:
        return task.family in FAMILIES[self.optimizer] and task.name in self.values

    def supports_length(self, task: TaskSpec, n: int) -> bool:
        return n in self.values.get(task.name, {})

    def run(self, batch: Batch, value: float, steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predictions (B, steps, q[, m]) after each of `steps` steps at `value`, in float64, and the last w (or
        None): `gd.descend`, or ISTA / FISTA (`proximal.LassoProblem.iterates`) with the step value / L."""
        if self.optimizer == "gd":
            return gd.descend(batch, value, steps)
        lam = proximal.lasso_lambda(batch.task, batch.n) if batch.task.family == "lasso" else 0.0
        problem = proximal.LassoProblem.of(batch.x, batch.y, lam)
        problem = dataclasses.replace(problem, step=problem.step * value)
        path = problem.xty.new_empty(batch.x.shape[0], steps, batch.task.d)
        for _ in problem.iterates(steps, self.optimizer == "fista", out=path):
            pass
        return path @ batch.x_query.double().mT, path[:, -1]

    def predict(self, batch: Batch) -> Prediction:
        values = self.values[batch.task.name][batch.n][: self.budget]
        by_value: dict[float, list[int]] = {}  # the budgets that share a value share one run
        for k, value in enumerate(values, 1):
            by_value.setdefault(value, []).append(k)
        steps, w = None, None
        for value, ks in by_value.items():
            out, last = self.run(batch, value, ks[-1])
            if steps is None:
                steps = out.new_empty(out.shape[0], self.budget, *out.shape[2:])
            index = torch.tensor(ks) - 1
            steps[:, index] = out[:, index]
            w = last if ks[-1] == self.budget else w
        dtype = batch.x.dtype
        return Prediction(steps[:, -1].to(dtype), steps=steps.to(dtype), w=None if w is None else w.to(dtype))


class NewtonSteps(newton.Newton):
    """The first `budget` steps of `newton`."""

    budget = MAX_BUDGET

    def predict(self, batch: Batch) -> Prediction:
        steps, w = self.iterate(batch, self.budget)
        dtype = batch.x.dtype
        return Prediction(steps[:, -1].to(dtype), steps=steps.to(dtype), w=None if w is None else w.to(dtype))


def _comparator(base: type[Model], name: str, k: int, **attrs: Any) -> Any:
    """The model `<name>@<k>`: `base` for a budget of k steps."""
    cls = f"{name.capitalize()}At{k}"
    body = {**attrs, "name": f"{name}@{k}", "budget": k, "__module__": __name__, "__qualname__": cls}
    return type(cls, (base,), body)


GdAt1, GdAt4, GdAt16 = (_comparator(Tuned, "gd", k, optimizer="gd") for k in COMPARATOR_BUDGETS)
IstaAt1, IstaAt4, IstaAt16 = (_comparator(Tuned, "ista", k, optimizer="ista") for k in COMPARATOR_BUDGETS)
FistaAt1, FistaAt4, FistaAt16 = (_comparator(Tuned, "fista", k, optimizer="fista") for k in COMPARATOR_BUDGETS)
NewtonAt1, NewtonAt4, NewtonAt16 = (_comparator(NewtonSteps, "newton", k) for k in COMPARATOR_BUDGETS)
Newton3At1, Newton3At4, Newton3At16 = (
    _comparator(NewtonSteps, "newton3", k, order=newton.Newton3.order, families=newton.Newton3.families)
    for k in COMPARATOR_BUDGETS
)
