"""Grid search of the step of GD, ISTA and FISTA for every budget of 1 to 16 steps (stored in `tuned_steps.json`).

Procedure, for every task an optimizer runs on and every prompt length n it scores: draw `PROMPTS` prompts
of length n with the task's training sampler (`task.train_generator(TUNING_SEED)`, a seed stream disjoint
from the evaluation set), run the optimizer from 0 for `budgeted.MAX_BUDGET` steps with each value of its grid,
and keep, for every budget k, the value whose k-th step has the smallest relative error of the query prediction
(sum of squared errors over sum of squared targets): the best k-step schedule of a constant step. GD's value is
its step size (`GD_GRID`, forty a decade); ISTA's and FISTA's, the multiple c of their per-prompt step 1/L
(`PROXIMAL_GRID`, sixteen a doubling), with the lasso penalty of `lasso_lambda.json` (0 on the linear tasks).
Beyond one step, GD's step size competes only if eta L <= `tune_gd.STABILITY` (1.5) on every tuning prompt (L as
in `tune_gd.smoothness`): one step size serves every prompt, and one near 2 / L on the tuning prompts diverges on
an evaluation prompt of larger L (ISTA's and FISTA's steps are each prompt's own). Everything runs in float64 on
the CPU; GD on a quadratic loss (linear, ar and kernel tasks), and ISTA on the linear tasks (GD with the step
c / L), in closed form in the eigenbasis of the Hessian (`Quadratic`), the other runs step by step
(`gd.logistic`, `proximal.LassoProblem.iterates`).

    python -m iclbench.baselines.tune_steps            # print the search's results
    python -m iclbench.baselines.tune_steps --check    # exit 1 unless they equal the stored ones
    python -m iclbench.baselines.tune_steps --write    # store them
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from iclbench import Batch
from iclbench.baselines import budgeted, gd, proximal, tune_gd
from iclbench.kernels import gram
from iclbench.tasks import Task, select

TUNING_SEED = tune_gd.TUNING_SEED
PROMPTS = tune_gd.PROMPTS
GD_GRID = tuple(float(v) for v in np.geomspace(1e-3, 1e3, 241))
"""GD's step sizes: 1e-3 to 1e3, forty a decade (every fourth is `tune_gd.GRID`)."""
PROXIMAL_GRID = tuple(2.0 ** (i / 16) for i in range(-48, 33))
"""Multiples c of ISTA's and FISTA's step 1/L: 1/8 to 4, sixteen a doubling."""
BUDGETS = tuple(range(1, budgeted.MAX_BUDGET + 1))
CHUNK = 16
"""Grid values computed at once (for the step-by-step searches, a batch of CHUNK x PROMPTS prompts)."""


@dataclass(frozen=True)
class Quadratic:
    """GD from 0 on the quadratic loss of a batch (linear and ar tasks: least squares; kernel tasks: functional GD),
    as `gd.descend` runs it, in closed form. With A the Hessian (X^T X / n, or K / n) = V diag(l) V^T, k steps of
    size eta give V diag(eta (1 + r + ... + r^(k-1))) V^T, r = 1 - eta l, applied to the mean gradient's opposite
    at 0: each prediction is a sum over the eigenvectors of `weights` times those factors."""

    lam: torch.Tensor
    """(B, d) the eigenvalues of A."""
    weights: torch.Tensor
    """(B, outputs, d) each output's (query's, and label coordinate's) term along each eigenvector."""
    shape: tuple[int, ...]
    """The outputs' shape: (q,) or (q, m)."""

    @classmethod
    def of(cls, batch: Batch) -> Quadratic:
        spec = batch.task
        x, y, x_query = batch.x.double(), batch.y.double(), batch.x_query.double()
        n = x.shape[1]
        if spec.family == "kernel":
            kind = spec.params["kernel"]
            lam, v = torch.linalg.eigh(gram(x, x, kind) / n)
            weights = (gram(x_query, x, kind) @ v) * ((v.mT @ y.unsqueeze(-1)).squeeze(-1) / n).unsqueeze(-2)
        else:
            lam, v = torch.linalg.eigh(x.mT @ x / n)
            features = x_query @ v  # (B, q, d)
            if y.dim() == 2:
                weights = features * ((v.mT @ (x.mT @ y.unsqueeze(-1))).squeeze(-1) / n).unsqueeze(-2)
            else:  # vector labels: W's rows in the eigenbasis (B, m, d); each query's prediction is (m,)
                weights = features.unsqueeze(-2) * (y.mT @ x @ v / n).unsqueeze(-3)
        return cls(lam.clamp(min=0), weights.flatten(1, -2), tuple(weights.shape[1:-1]))

    def steps(self, etas: torch.Tensor, budgets: tuple[int, ...], scaled: bool = False) -> torch.Tensor:
        """The predictions (E, B, len(budgets), q[, m]) after each budget of steps, for each step size of `etas`
        (E,); `scaled`: each is a multiple of the prompt's 1 / l_max (on least squares, ISTA's step 1/L with
        lambda = 0)."""
        eta = etas.double().view(-1, 1, 1) / (self.lam[:, -1:] if scaled else 1)  # (E, B or 1, 1)
        r = (1 - eta * self.lam).unsqueeze(-1)  # (E, B, d, 1)
        longest = max(budgets)
        powers = torch.cat([torch.ones_like(r), r.expand(*r.shape[:-1], longest - 1).cumprod(-1)], -1)  # r^0..
        factor = (eta.unsqueeze(-1) * powers.cumsum(-1))[..., [k - 1 for k in budgets]]  # (E, B, d, budgets)
        pred = self.weights.unsqueeze(0) @ factor  # (E, B, outputs, budgets)
        return pred.movedim(-1, 2).reshape(*pred.shape[:2], len(budgets), *self.shape)


def _relative_errors(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """The relative error of predictions (P, K, q[, m]) after each of their K steps: the sum of squared errors
    over the sum of squared targets (P, q[, m]), over every prompt and output."""
    err = ((pred - target.unsqueeze(1)) ** 2).transpose(0, 1).flatten(1).sum(-1)
    return (err / (target**2).sum()).numpy()


Run = Callable[[list[float]], torch.Tensor]
"""Runs of an optimizer for `budgeted.MAX_BUDGET` steps, one per value of a chunk of its grid: the predictions
(values, P, steps, q[, m]) after each step."""


def _search(run: Run, grid: tuple[float, ...], target: torch.Tensor) -> dict[float, np.ndarray]:
    """{grid value: relative errors after 1, 2, ..., `budgeted.MAX_BUDGET` steps}, `CHUNK` values a run."""
    out = {}
    for i in range(0, len(grid), CHUNK):
        chunk = grid[i : i + CHUNK]
        out.update(zip(chunk, (_relative_errors(pred, target) for pred in run(list(chunk)))))
    return out


def gd_errors(batch: Batch, target: torch.Tensor) -> dict[float, np.ndarray]:
    """GD's relative error after every budget of steps for every step size of `GD_GRID`; after two steps or more,
    inf for a step size above `tune_gd.STABILITY` / L on some tuning prompt (`tune_gd.smoothness`): one step size
    serves every prompt, and one near 2 / L on the tuning prompts diverges on an evaluation prompt of larger L."""
    limit = tune_gd.STABILITY / float(tune_gd.smoothness(batch).max())
    first = np.arange(len(BUDGETS)) == 0
    return {eta: np.where(first | (eta <= limit), e, np.inf) for eta, e in _gd_errors(batch, target).items()}


def _gd_errors(batch: Batch, target: torch.Tensor) -> dict[float, np.ndarray]:
    """GD's relative error after every budget of steps for every step size of `GD_GRID`."""
    if batch.task.family != "logistic":
        quadratic = Quadratic.of(batch)
        return _search(lambda etas: quadratic.steps(torch.tensor(etas, dtype=torch.float64), BUDGETS), GD_GRID, target)
    x, y, x_query = batch.x.double(), batch.y.double(), batch.x_query.double()
    prompts = x.shape[0]

    def run(etas: list[float]) -> torch.Tensor:
        c = len(etas)
        eta = torch.tensor(etas, dtype=torch.float64).repeat_interleave(prompts).unsqueeze(-1)
        out, _ = gd.logistic(x.repeat(c, 1, 1), y.repeat(c, 1), x_query.repeat(c, 1, 1), eta, batch.task.params["mu"],
                             budgeted.MAX_BUDGET)
        return out.view(c, prompts, *out.shape[1:])

    return _search(run, GD_GRID, target)


def proximal_errors(batch: Batch, target: torch.Tensor, accelerated: bool) -> dict[float, np.ndarray]:
    """ISTA's (FISTA's when `accelerated`) relative error after every budget of steps for every multiple c of
    `PROXIMAL_GRID` of its step 1/L."""
    spec = batch.task
    if spec.family == "linear" and not accelerated:  # ISTA with lambda = 0: GD with the step c / L
        quadratic = Quadratic.of(batch)
        return _search(lambda cs: quadratic.steps(torch.tensor(cs, dtype=torch.float64), BUDGETS, scaled=True),
                       PROXIMAL_GRID, target)
    lam = proximal.lasso_lambda(spec, batch.n) if spec.family == "lasso" else 0.0
    prompts = batch.x.shape[0]

    def run(values: list[float]) -> torch.Tensor:
        c = len(values)
        problem = proximal.LassoProblem.of(batch.x.repeat(c, 1, 1), batch.y.repeat(c, 1), lam)
        scale = torch.tensor(values, dtype=torch.float64).repeat_interleave(prompts).unsqueeze(-1)
        problem = dataclasses.replace(problem, step=problem.step * scale)
        path = torch.stack(list(problem.iterates(budgeted.MAX_BUDGET, accelerated)), 1)
        out = path @ batch.x_query.double().repeat(c, 1, 1).mT
        return out.view(c, prompts, *out.shape[1:])

    return _search(run, PROXIMAL_GRID, target)


def best(errors: dict[float, np.ndarray]) -> tuple[list[float], list[float]]:
    """Per budget, the grid value of smallest error (the smaller value on a tie; a diverged run's NaN never wins)
    and that error in dB (2 decimals)."""
    values = sorted(errors)
    table = np.stack([errors[v] for v in values])  # (values, budgets)
    table = np.where(np.isfinite(table), table, np.inf)
    pick = table.argmin(0)
    return [values[i] for i in pick], [round(10 * math.log10(table[i, j]), 2) for j, i in enumerate(pick)]


def tune(optimizer: str, task: Task) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """The tuned values per prompt length (one per budget) and the tuning relative errors (dB) they reach, for one
    optimizer ("gd", "ista" or "fista") on one task."""
    generator = task.train_generator(TUNING_SEED)
    chosen, err_db = {}, {}
    for n in task.spec.lengths:
        sample = task.sample(PROMPTS, n, generator, dtype=torch.float64)
        if optimizer == "gd":
            errors = gd_errors(sample.batch, sample.target)
        else:
            errors = proximal_errors(sample.batch, sample.target, optimizer == "fista")
        chosen[n], err_db[n] = best(errors)
    return chosen, err_db


def search(patterns: list[str] | None = None) -> dict[str, Any]:
    """The search, as stored in `tuned_steps.json`, on the tasks matching `patterns` (all by default)."""
    found: dict[str, Any] = {"values": {}, "tuning_rel_err_db": {}}
    for optimizer in budgeted.OPTIMIZERS:
        for task in select(patterns):
            if task.spec.family in budgeted.FAMILIES[optimizer]:
                chosen, err_db = tune(optimizer, task)
                name = task.spec.name
                found["values"].setdefault(optimizer, {})[name] = {str(n): v for n, v in chosen.items()}
                found["tuning_rel_err_db"].setdefault(optimizer, {})[name] = {str(n): e for n, e in err_db.items()}
                print(f"{optimizer:6s}{name:18s} " + "; ".join(
                    f"n={n}: {v[0]:.3g} (1 step, {err_db[n][0]} dB) to {v[-1]:.3g} ({len(v)} steps, {err_db[n][-1]} dB)"
                    for n, v in chosen.items()
                ), flush=True)
    return {
        "procedure": " ".join((__doc__ or "").split("\n\n")[1].split()),
        "tuning_seed": TUNING_SEED,
        "prompts": PROMPTS,
        "budgets": list(BUDGETS),
        "grids": {"gd": {"geomspace": [GD_GRID[0], GD_GRID[-1], len(GD_GRID)]},
                  "ista and fista": {"powers of 2": [-3, 2, 16]}},
        **found,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iclbench.baselines.tune_steps", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 unless the search finds the stored values")
    action.add_argument("--write", action="store_true", help=f"store them in {budgeted.STEPS_FILE.name}")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # small batched operations: threads cost more than they save
    found = search()
    text = budgeted.document(found)
    if args.write:
        budgeted.STEPS_FILE.write_text(text)
        print(f"wrote {budgeted.STEPS_FILE}")
    if args.check:
        stored = json.loads(budgeted.STEPS_FILE.read_text())
        if stored != json.loads(text):
            fresh = json.loads(text)["values"]
            differ = [f"{key}: stored {stored['values'].get(key)}, found {v}" for key, v in fresh.items()
                      if stored["values"].get(key) != v]
            print("the stored values differ from the search:\n  " + "\n  ".join(differ or ["(the procedure)"]))
            return 1
        print(f"the values in {budgeted.STEPS_FILE.name} are reproduced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
