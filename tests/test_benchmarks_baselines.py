"""Timings of the batched baselines (pytest-benchmark; compare runs with --benchmark-compare)."""

from __future__ import annotations

import torch

from iclbench import Batch, tasks
from iclbench.baselines.proximal import FISTA, lasso_exact, lasso_lambda
from iclbench.baselines.ridge import solve
from iclbench.cache import eval_set
from iclbench.solvers import logistic_optimum


def nominal(name: str, count: int) -> Batch:
    task = tasks.get(name)
    data, _ = eval_set(task)
    n = task.spec.nominal
    return Batch(task.spec, data.x[:count, :n].double(), data.y[:count, :n].double(), data.x_query[:count].double())


def test_lasso_exact_speed(benchmark) -> None:
    batch = nominal("lasso/fixed", 256)
    lam = lasso_lambda(batch.task, batch.n)
    b = benchmark.pedantic(lasso_exact, args=(batch.x, batch.y, lam), rounds=2, iterations=1)
    assert b.shape == (256, batch.task.d)


def test_fista_speed(benchmark) -> None:
    batch = nominal("lasso/fixed", 64)
    pred = benchmark.pedantic(FISTA().predict, args=(batch,), rounds=2, iterations=1)
    assert pred.steps.shape == (64, FISTA.iterations, batch.task.n_queries)


def test_logistic_optimum_speed(benchmark) -> None:
    batch = nominal("logistic/kappa1", 256)
    w = benchmark.pedantic(logistic_optimum, args=(batch.x, batch.y, batch.task.params["mu"]), rounds=2, iterations=1)
    assert torch.isfinite(w).all()


def test_least_squares_speed(benchmark) -> None:
    batch = nominal("linear/kappa1", 2048)
    w = benchmark.pedantic(solve, args=(batch.x, batch.y, 0.0), rounds=3, iterations=1)
    assert w.shape == (2048, batch.task.d)
