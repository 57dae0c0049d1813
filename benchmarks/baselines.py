"""Batched baselines against per-prompt reference loops, on the 2,048 evaluation prompts of a task.

    python benchmarks/baselines.py [--repeats 3]

For each pair it prints the best-of-`repeats` wall time of both, their ratio and the
largest difference between their answers (coefficient vectors):
  lasso-exact (`proximal.lasso_exact`)       vs sklearn Lasso per prompt         (lasso/fixed, nominal length)
  logistic optimum (`solvers.logistic_optimum`) vs sklearn LogisticRegression per prompt (logistic/kappa1, nominal)
  ridge / ols (`ridge.solve`)                vs numpy.linalg.lstsq per prompt     (linear/kappa1, nominal)
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import Lasso, LogisticRegression

from iclbench import tasks
from iclbench.baselines.proximal import lasso_exact, lasso_lambda
from iclbench.baselines.ridge import bayes_lambda, solve
from iclbench.cache import eval_set
from iclbench.solvers import logistic_optimum


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
    lam, n = lasso_lambda(spec, spec.nominal), spec.nominal
    xs, ys = x.numpy(), y.numpy()

    def lasso_loop() -> np.ndarray:
        fit = lambda a, b: Lasso(alpha=lam / n, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(a, b).coef_  # noqa: E731
        return np.stack([fit(a, b) for a, b in zip(xs, ys)])

    lspec, lx, ly = prompts("logistic/kappa1")
    mu, ln = lspec.params["mu"], lspec.nominal
    lxs, lys = lx.numpy(), ly.numpy()

    def logistic_loop() -> np.ndarray:
        model = lambda: LogisticRegression(C=1 / (mu * ln), fit_intercept=False, tol=1e-12, max_iter=10_000)  # noqa: E731
        return np.stack([model().fit(a, b).coef_[0] for a, b in zip(lxs, lys)])

    rspec, rx, ry = prompts("linear/kappa1")
    rlam = bayes_lambda(rspec)
    if rlam != 0:
        raise ValueError(f"{rspec.name}: expected a noiseless task (ridge = least squares), got lambda {rlam}")
    rxs, rys = rx.numpy(), ry.numpy()

    return [
        ("lasso-exact vs sklearn Lasso (lasso/fixed)", lambda: lasso_exact(x, y, lam).numpy(), lasso_loop),
        ("logistic optimum vs sklearn LogisticRegression (logistic/kappa1)", lambda: logistic_optimum(lx, ly, mu).numpy(), logistic_loop),
        (
            "ridge/ols solve vs numpy lstsq (linear/kappa1)",
            lambda: solve(rx, ry, rlam).numpy(),
            lambda: np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(rxs, rys)]),
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
