"""Tune the single ridge penalty of `ridge-fixed` per select task and prompt length, on the tuning seed.

For every task of the select family and every prompt length n it scores, `PROMPTS` prompts of length n
are drawn with `task.train_generator(TUNING_SEED)` (a stream disjoint from the evaluation set); each
lambda of `GRID` is scored by the relative query error of ridge at that penalty on every prompt,
sum (x_query^T w_lambda - target)^2 / sum target^2, and the best one is kept (an error if it is the largest
of the grid; the smallest, 0, is least squares, the end of the range).

    python -m iclbench.baselines.tune_ridge            # tune and write iclbench/baselines/ridge_fixed_lambda.json
    python -m iclbench.baselines.tune_ridge --check    # re-tune and compare with the file
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from iclbench import tasks
from iclbench.baselines.ridge import apply, solve
from iclbench.baselines.selection import PENALTY_FILE

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
    out: dict[str, dict[str, float]] = {}
    for task in tasks.select(["select"]):
        for n in task.spec.lengths:
            errors = grid_errors(task, n)
            best = min(range(len(GRID)), key=errors.__getitem__)
            if best == len(GRID) - 1:
                raise RuntimeError(f"{task.spec.name} n={n}: the best lambda {GRID[best]:g} is the largest of the grid")
            out.setdefault(task.spec.name, {})[str(n)] = GRID[best]
            print(f"{task.spec.name} n={n}: lambda = {GRID[best]:g} (relative query error {errors[best]:.4g})")
    return out


def document(lambdas: dict[str, dict[str, float]]) -> dict:
    return {
        "procedure": "python -m iclbench.baselines.tune_ridge",
        "tuning_seed": TUNING_SEED,
        "prompts": PROMPTS,
        "criterion": CRITERION,
        "grid": list(GRID),
        "lambda": lambdas,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iclbench.baselines.tune_ridge", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="re-tune and compare with the stored values")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small batched solves: threads cost more than they save
    lambdas = tune()
    if args.check:
        stored = json.loads(PENALTY_FILE.read_text())
        if stored != document(lambdas):
            print(f"MISMATCH: {PENALTY_FILE} holds {stored['lambda']}, re-tuning gives {lambdas}", file=sys.stderr)
            return 1
        print(f"{PENALTY_FILE} is reproduced")
        return 0
    PENALTY_FILE.write_text(json.dumps(document(lambdas), indent=2) + "\n")
    print(f"wrote {PENALTY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
