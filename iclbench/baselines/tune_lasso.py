"""Tune the lasso penalty of ISTA, FISTA and lasso-exact per lasso task and prompt length, on the tuning seed.

For every lasso task and every prompt length n it scores, `PROMPTS` prompts of length n
are drawn with `task.train_generator(TUNING_SEED)` (a stream disjoint from the
evaluation set); each lambda of `GRID` is scored by the relative query error of the
exact lasso solution, sum (x_query^T b_lambda - f_query)^2 / sum f_query^2, and the
best one is kept. The best penalty does not follow a simple law in n (at n = 5 it is
about ten times the value that sqrt(n / nominal) scaling would give), so every length
is tuned, as GD's step size is.

    python -m iclbench.baselines.tune_lasso            # tune and write iclbench/baselines/lasso_lambda.json
    python -m iclbench.baselines.tune_lasso --check    # re-tune and compare with the file
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from iclbench import tasks
from iclbench.baselines.proximal import LAMBDA_FILE, lasso_exact

TUNING_SEED = 0
PROMPTS = 1024
GRID = tuple(round(10 ** (-2 + 0.1 * i), 6) for i in range(26))
"""lambda from 0.01 to 10^0.5, ten points per decade."""
GRID_CHUNK = 4
"""Lambdas of `GRID` solved in one batch (of GRID_CHUNK * PROMPTS problems): bounded memory."""

CRITERION = "relative query error sum (x_query^T b - f_query)^2 / sum f_query^2 of the exact lasso solution"


def grid_errors(task: tasks.Task, n: int) -> list[float]:
    """The relative query error of the exact lasso solution for every lambda of `GRID` at length n.

    `GRID_CHUNK` lambdas at a time, all prompts at once.
    """
    sample = task.sample(PROMPTS, n, task.train_generator(TUNING_SEED), dtype=torch.float64)
    errors: list[float] = []
    for start in range(0, len(GRID), GRID_CHUNK):
        chunk = GRID[start : start + GRID_CHUNK]
        g = len(chunk)
        x, y = sample.batch.x.repeat(g, 1, 1), sample.batch.y.repeat(g, 1)
        lam = torch.tensor(chunk, dtype=torch.float64).repeat_interleave(PROMPTS)
        b = lasso_exact(x, y, lam).view(g, PROMPTS, -1)
        pred = torch.einsum("pqd,gpd->gpq", sample.batch.x_query, b)
        errors += (((pred - sample.target) ** 2).sum((1, 2)) / (sample.target**2).sum()).tolist()
    return errors


def tune() -> dict[str, dict[str, float]]:
    """The best lambda of `GRID` for every lasso task at every prompt length, {task: {str(n): lambda}}."""
    out: dict[str, dict[str, float]] = {}
    for task in tasks.select(["lasso"]):
        for n in task.spec.lengths:
            errors = grid_errors(task, n)
            best = min(range(len(GRID)), key=errors.__getitem__)
            if best in (0, len(GRID) - 1):
                raise RuntimeError(f"{task.spec.name} n={n}: the best lambda {GRID[best]:g} is at the edge of the grid")
            out.setdefault(task.spec.name, {})[str(n)] = GRID[best]
            print(f"{task.spec.name} n={n}: lambda = {GRID[best]:g} (relative query error {errors[best]:.4g})")
    return out


def document(lambdas: dict[str, dict[str, float]]) -> dict:
    return {
        "procedure": "python -m iclbench.baselines.tune_lasso",
        "tuning_seed": TUNING_SEED,
        "prompts": PROMPTS,
        "criterion": CRITERION,
        "grid": list(GRID),
        "lambda": lambdas,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="re-tune and compare with the stored values")
    args = parser.parse_args(argv)
    lambdas = tune()
    if args.check:
        stored = json.loads(LAMBDA_FILE.read_text())
        if stored != document(lambdas):
            print(f"MISMATCH: {LAMBDA_FILE} holds {stored['lambda']}, re-tuning gives {lambdas}", file=sys.stderr)
            return 1
        print(f"{LAMBDA_FILE} is reproduced")
        return 0
    LAMBDA_FILE.write_text(json.dumps(document(lambdas), indent=2) + "\n")
    print(f"wrote {LAMBDA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
