"""Grid search of the gradient-descent step size per task and prompt length (stored in `gd_steps.json`).

Procedure, for every task of the linear, logistic, kernel and ar families and every prompt length
n it scores: draw `PROMPTS` prompts of length n with the task's training sampler
(`task.train_generator(TUNING_SEED)`, a seed stream disjoint from the evaluation set), run
`TUNING_BUDGET` GD steps (the depth of the compared transformers) for every step size of
`GRID`, and keep the one with the smallest relative error of the query prediction
(sum of squared errors over sum of squared targets), among the step sizes that are stable over
the full `gd.BUDGET`: eta * L <= `STABILITY` for every tuning prompt, with L the smoothness
constant of the prompt's loss (lambda_max of X^T X / n, with scalar or vector labels; of
X^T X / (4n) + mu for the logistic loss; of K / n for functional GD). Everything runs in
float64 on the CPU.

    python -m iclbench.baselines.tune_gd            # print the search's results
    python -m iclbench.baselines.tune_gd --check    # exit 1 unless they equal the stored step sizes
    python -m iclbench.baselines.tune_gd --write    # store them
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np
import torch

from iclbench import Batch
from iclbench.baselines import gd
from iclbench.kernels import gram
from iclbench.tasks import Task, select

TUNING_SEED = 7
PROMPTS = 1024
TUNING_BUDGET = 12
GRID = tuple(float(v) for v in np.geomspace(1e-3, 1e3, 61))
STABILITY = 1.5


def same_grid_point(stored: float | None, found: float) -> bool:
    """Whether a stored step size is the grid point found: equal but for the last bits, in which `numpy.geomspace`
    differs between NumPy versions (neighbouring grid points are a factor 10^0.1 apart)."""
    return stored is not None and math.isclose(stored, found, rel_tol=1e-12)


def smoothness(batch: Batch) -> torch.Tensor:
    """Per-prompt smoothness constant L (B,) of the loss GD runs on (gradient Lipschitz constant)."""
    spec, x = batch.task, batch.x
    if spec.family == "kernel":
        return torch.linalg.eigvalsh(gram(x, x, spec.params["kernel"]))[:, -1] / batch.n
    top = torch.linalg.eigvalsh(x.mT @ x / batch.n)[:, -1]
    return top / 4 + spec.params["mu"] if spec.family == "logistic" else top


def tune(task: Task) -> tuple[dict[int, float], dict[int, float]]:
    """The chosen step size per prompt length, and the tuning relative error (dB) it reaches."""
    generator = task.train_generator(TUNING_SEED)
    chosen: dict[int, float] = {}
    err_db: dict[int, float] = {}
    for n in task.spec.lengths:
        sample = task.sample(PROMPTS, n, generator, dtype=torch.float64)
        limit = STABILITY / float(smoothness(sample.batch).max())
        target = sample.target
        best = (float("inf"), 0.0)
        stable = [eta for eta in GRID if eta <= limit]
        for eta, pred in zip(stable, gd.final_predictions(sample.batch, stable, TUNING_BUDGET)):
            err = float(((pred - target) ** 2).sum() / (target**2).sum())
            if err < best[0]:
                best = (err, eta)
        if best[1] == 0.0:
            raise RuntimeError(f"{task.spec.name}, n={n}: every step size of the grid exceeds {STABILITY} / L")
        chosen[n] = best[1]
        err_db[n] = round(10 * float(np.log10(best[0])), 2)
    return chosen, err_db


def search() -> dict[str, Any]:
    """The whole search, as stored in `gd_steps.json`."""
    tasks = [t for t in select() if t.spec.family in gd.FAMILIES]
    results = {t.spec.name: tune(t) for t in tasks}
    return {
        "procedure": " ".join((__doc__ or "").split("\n\n")[1].split()),
        "tuning_seed": TUNING_SEED,
        "prompts": PROMPTS,
        "tuning_budget": TUNING_BUDGET,
        "grid": {"geomspace": [GRID[0], GRID[-1], len(GRID)]},
        "stability": STABILITY,
        "step_sizes": {name: {str(n): eta for n, eta in r[0].items()} for name, r in results.items()},
        "tuning_rel_err_db": {name: {str(n): e for n, e in r[1].items()} for name, r in results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iclbench.baselines.tune_gd", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 unless the search finds the stored step sizes")
    action.add_argument("--write", action="store_true", help=f"store the step sizes in {gd.STEP_SIZES_FILE.name}")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # the batched ops are small: threads cost more than they save
    found = search()
    for name, by_length in found["step_sizes"].items():
        cells = ", ".join(
            f"n={n}: {eta:.4g} ({found['tuning_rel_err_db'][name][n]} dB)" for n, eta in by_length.items()
        )
        print(f"{name:18s} {cells}")
    if args.write:
        gd.STEP_SIZES_FILE.write_text(json.dumps(found, indent=2) + "\n")
        print(f"wrote {gd.STEP_SIZES_FILE}")
    if args.check:
        stored = gd.load_step_sizes()
        fresh = {name: {int(n): eta for n, eta in v.items()} for name, v in found["step_sizes"].items()}
        diff = [
            f"{t} n={n}: stored {stored.get(t, {}).get(n)}, found {eta}"
            for t, v in fresh.items()
            for n, eta in v.items()
            if not same_grid_point(stored.get(t, {}).get(n), eta)
        ]
        if diff or {t: set(v) for t, v in stored.items()} != {t: set(v) for t, v in fresh.items()}:
            print("stored step sizes differ from the search:\n  " + "\n  ".join(diff or ["(other tasks or lengths)"]))
            return 1
        print(f"stored step sizes in {gd.STEP_SIZES_FILE.name} are reproduced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
