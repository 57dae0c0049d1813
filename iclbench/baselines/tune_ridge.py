"""Tune the single ridge penalty of `ridge-fixed` per select task and prompt length, on the tuning seed.

For every task of the select family and every prompt length n it scores, `PROMPTS` prompts of length n
are drawn with `task.train_generator(TUNING_SEED)` (a stream disjoint from the evaluation set); each
lambda of `GRID` is scored by the relative query error of ridge at that penalty on every prompt,
sum (x_query^T w_lambda - target)^2 / sum target^2, and the best one is kept (an error if it is the largest
of the grid; the smallest, 0, is least squares, the end of the range: `tuning.best_on_grid`).

    python -m iclbench.baselines.tune_ridge            # tune and write iclbench/baselines/ridge_fixed_lambda.json
    python -m iclbench.baselines.tune_ridge --check    # re-tune and compare with the file
"""

from __future__ import annotations

import sys

import torch

from iclbench import tasks
from iclbench.baselines.ridge import apply, solve
from iclbench.baselines.selection import PENALTY_FILE
from iclbench.baselines import tuning

TUNING_SEED = 0
PROMPTS = 4096
GRID = (0.0, *(round(10 ** (-3 + 0.1 * i), 6) for i in range(61)))
"""lambda 0 (least squares), then from 0.001 to 1000, ten points per decade."""

CRITERION = "relative query error sum (x_query^T w - target)^2 / sum target^2 of ridge at one penalty for every prompt"


def grid_errors(task: tasks.Task, n: int) -> list[float]:
    """The relative query error of ridge at every lambda of `GRID` at length n, on the tuning prompts."""
    sample = task.sample(PROMPTS, n, task.train_generator(TUNING_SEED), dtype=torch.float64)
    b = sample.batch
    energy = (sample.target**2).sum()
    return [float(((apply(b.x_query, solve(b.x, b.y, lam)) - sample.target) ** 2).sum() / energy) for lam in GRID]


def tune() -> dict[str, dict[str, float]]:
    """The best lambda of `GRID` for every select task at every prompt length, {task: {str(n): lambda}}."""
    return {
        t.spec.name: {str(n): tuning.best_on_grid(t.spec.name, n, GRID, grid_errors(t, n), lowest_is_a_limit=True)
                      for n in t.spec.lengths}
        for t in tasks.select(["select"])
    }


def document(lambdas: dict[str, dict[str, float]]) -> dict:
    return {"procedure": "python -m iclbench.baselines.tune_ridge", "tuning_seed": TUNING_SEED, "prompts": PROMPTS,
            "criterion": CRITERION, "grid": list(GRID), "lambda": lambdas}


if __name__ == "__main__":
    sys.exit(tuning.main(None, __spec__.name, __doc__, PENALTY_FILE, lambda: document(tune())))
