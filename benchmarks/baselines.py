"""Batched baselines against per-prompt reference loops, on the 2,048 evaluation prompts of a task.

    python benchmarks/baselines.py [--repeats 3]

For each pair it prints the best-of-`repeats` wall time of both, their ratio and the
largest difference between their answers (coefficient vectors):
  lasso-exact (`proximal.lasso_exact`)          vs sklearn Lasso per prompt              (lasso/fixed, nominal length)
  logistic optimum (`solvers.logistic_optimum`) vs sklearn LogisticRegression per prompt (logistic/kappa1, nominal)
  ridge / ols (`ridge.solve`)                   vs numpy.linalg.lstsq per prompt          (linear/kappa1, nominal)
The reference loops are those of the tests (`tests/fixtures/references.py`).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from iclbench import tasks
from iclbench.baselines.proximal import lasso_exact, lasso_lambda
from iclbench.baselines.ridge import bayes_lambda, solve
from iclbench.cache import eval_set
from iclbench.solvers import logistic_optimum

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.references import lasso_loop, logistic_loop, lstsq_loop  # noqa: E402


def best_time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), np.asarray(out)


def prompts(name: str) -> tuple[tasks.TaskSpec, torch.Tensor, torch.Tensor]:
    task = tasks.get(name)
    data, _ = eval_set(task)
    n = task.spec.nominal
    return task.spec, data.x[:, :n].double(), data.y[:, :n].double()


def cases() -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    spec, x, y = prompts("lasso/fixed")
    lam = lasso_lambda(spec, spec.nominal)
    lspec, lx, ly = prompts("logistic/kappa1")
    mu = lspec.params["mu"]
    rspec, rx, ry = prompts("linear/kappa1")
    rlam = bayes_lambda(rspec)
    if rlam != 0:
        raise ValueError(f"{rspec.name}: expected a noiseless task (ridge = least squares), got lambda {rlam}")
    return [
        (
            "lasso-exact vs sklearn Lasso (lasso/fixed)",
            lambda: lasso_exact(x, y, lam).numpy(),
            lambda: lasso_loop(x.numpy(), y.numpy(), lam),
        ),
        (
            "logistic optimum vs sklearn LogisticRegression (logistic/kappa1)",
            lambda: logistic_optimum(lx, ly, mu).numpy(),
            lambda: logistic_loop(lx.numpy(), ly.numpy(), mu),
        ),
        (
            "ridge/ols solve vs numpy lstsq (linear/kappa1)",
            lambda: solve(rx, ry, rlam).numpy(),
            lambda: lstsq_loop(rx.numpy(), ry.numpy()),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timings per function; the best is reported")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats}")
    for label, batched, loop in cases():
        t_batched, a = best_time(batched, args.repeats)
        t_loop, b = best_time(loop, args.repeats)
        print(
            f"{label}: batched {t_batched * 1e3:.1f} ms, loop {t_loop * 1e3:.1f} ms, "
            f"ratio {t_loop / t_batched:.1f}x, max |difference| {np.abs(a - b).max():.2e}"
        )


if __name__ == "__main__":
    main()
