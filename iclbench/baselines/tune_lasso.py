"""Tune the lasso penalty of ISTA, FISTA and lasso-exact per lasso task and prompt length, on the tuning seed.

For every lasso task (`proximal.is_lasso`: the lasso family and garg/sparse-linear) and every
prompt length n it scores, `PROMPTS` prompts of length n are drawn with
`task.train_generator(TUNING_SEED)` (a stream disjoint from the evaluation set); each lambda
of its grid (`grid`) is scored by the relative query error of the exact lasso solution,
sum (x_query^T b_lambda - f_query)^2 / sum f_query^2, and the best one is kept. The best
penalty does not follow a simple law in n (at n = 5 it is about ten times the value that
sqrt(n / nominal) scaling would give), so every length is tuned, as GD's step size is.

On a noisy task the best lambda must lie inside `GRID`. On a noiseless one (garg/sparse-linear) the
query error only falls as lambda falls (the exact lasso tends to basis pursuit, then, from n = d on,
to least squares, whose error is that of float32 data): its grid, `NOISELESS_GRID`, reaches down to
10^-6, and its best may be that smallest lambda, which stands for the limit.

    python -m iclbench.baselines.tune_lasso            # tune and write iclbench/baselines/lasso_lambda.json
    python -m iclbench.baselines.tune_lasso --check    # re-tune and compare with the file
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from iclbench import tasks
from iclbench.baselines.proximal import LAMBDA_FILE, is_lasso, lasso_exact

TUNING_SEED = 0
PROMPTS = 1024
GRID = tuple(round(10 ** (-2 + 0.1 * i), 6) for i in range(26))
"""lambda from 0.01 to 10^0.5, ten points per decade: the grid of the noisy tasks."""
NOISELESS_GRID = tuple(float(f"{10 ** (-6 + 0.1 * i):.5g}") for i in range(40)) + GRID
"""`GRID` extended down to 10^-6 (five significant digits below 0.01): the grid of the noiseless tasks, whose error
falls as lambda falls. (On a noisy task a lambda far below the noise's scale nearly interpolates the noise, where
the exact solver's duality-gap certificate can fail at n = d.)"""
GRID_CHUNK = 4
"""Lambdas of `GRID` solved in one batch (of GRID_CHUNK * PROMPTS problems): bounded memory."""

CRITERION = "relative query error sum (x_query^T b - f_query)^2 / sum f_query^2 of the exact lasso solution"


def grid(spec: tasks.TaskSpec) -> tuple[float, ...]:
    """The lambdas tried on a task: `GRID`, or `NOISELESS_GRID` on a noiseless task."""
    return GRID if spec.noise > 0 else NOISELESS_GRID


def grid_errors(task: tasks.Task, n: int) -> list[float]:
    """The relative query error of the exact lasso solution for every lambda of the task's `grid` at length n.

    `GRID_CHUNK` lambdas at a time, all prompts at once.
    """
    sample = task.sample(PROMPTS, n, task.train_generator(TUNING_SEED), dtype=torch.float64)
    lambdas = grid(task.spec)
    errors: list[float] = []
    for start in range(0, len(lambdas), GRID_CHUNK):
        chunk = lambdas[start : start + GRID_CHUNK]
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
    for task in (t for t in tasks.TASKS.values() if is_lasso(t.spec)):
        lambdas = grid(task.spec)
        for n in task.spec.lengths:
            errors = grid_errors(task, n)
            best = min(range(len(lambdas)), key=errors.__getitem__)
            if best == len(lambdas) - 1 or (best == 0 and task.spec.noise > 0):
                raise RuntimeError(
                    f"{task.spec.name} n={n}: the best lambda {lambdas[best]:g} is at the edge of the grid"
                )
            out.setdefault(task.spec.name, {})[str(n)] = lambdas[best]
            print(f"{task.spec.name} n={n}: lambda = {lambdas[best]:g} (relative query error {errors[best]:.4g})")
    return out


def document(lambdas: dict[str, dict[str, float]]) -> dict:
    return {
        "procedure": "python -m iclbench.baselines.tune_lasso",
        "tuning_seed": TUNING_SEED,
        "prompts": PROMPTS,
        "criterion": CRITERION,
        "grid": list(GRID),
        "noiseless_grid": list(NOISELESS_GRID),
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
