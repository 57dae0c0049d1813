"""Timings of the batched baselines and of the per-prompt reference loops they replace (pytest-benchmark).

Each batched solver and its reference loop share a benchmark group, so the report puts them
side by side; compare runs with --benchmark-compare. Nothing here asserts on time; the loop
tests check that both give the same answers, on every evaluation prompt of the task.
`python benchmarks/baselines.py` prints the ratios.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.references import lasso_loop, logistic_loop, lstsq_loop

from iclbench import Batch, tasks
from iclbench.baselines.proximal import FISTA, lasso_exact, lasso_lambda
from iclbench.baselines.ridge import solve
from iclbench.cache import eval_set
from iclbench.solvers import logistic_optimum

PROMPTS = 2048
"""All the prompts of a task, as in `benchmarks/baselines.py`: the two scikit-learn loops take about 7 s together."""


def nominal(name: str, count: int) -> Batch:
    task = tasks.get(name)
    data, _ = eval_set(task)
    n = task.spec.nominal
    return Batch(task.spec, data.x[:count, :n].double(), data.y[:count, :n].double(), data.x_query[:count].double())


@pytest.mark.benchmark(group=f"lasso: {PROMPTS} prompts of lasso/fixed")
def test_lasso_exact_speed(benchmark) -> None:
    batch = nominal("lasso/fixed", PROMPTS)
    lam = lasso_lambda(batch.task, batch.n)
    b = benchmark.pedantic(lasso_exact, args=(batch.x, batch.y, lam), rounds=3, iterations=1)
    assert b.shape == (PROMPTS, batch.task.d)


@pytest.mark.benchmark(group=f"lasso: {PROMPTS} prompts of lasso/fixed")
def test_sklearn_lasso_loop_speed(benchmark) -> None:
    batch = nominal("lasso/fixed", PROMPTS)
    lam = lasso_lambda(batch.task, batch.n)
    ref = benchmark.pedantic(lasso_loop, args=(batch.x.numpy(), batch.y.numpy(), lam), rounds=1, iterations=1)
    np.testing.assert_allclose(lasso_exact(batch.x, batch.y, lam).numpy(), ref, atol=1e-8)


def test_fista_speed(benchmark) -> None:
    batch = nominal("lasso/fixed", 64)
    pred = benchmark.pedantic(FISTA().predict, args=(batch,), rounds=2, iterations=1)
    assert pred.steps.shape == (64, FISTA.iterations, batch.task.n_queries)


@pytest.mark.benchmark(group=f"logistic: {PROMPTS} prompts of logistic/kappa1")
def test_logistic_optimum_speed(benchmark) -> None:
    batch = nominal("logistic/kappa1", PROMPTS)
    w = benchmark.pedantic(logistic_optimum, args=(batch.x, batch.y, batch.task.params["mu"]), rounds=3, iterations=1)
    assert torch.isfinite(w).all()


@pytest.mark.benchmark(group=f"logistic: {PROMPTS} prompts of logistic/kappa1")
def test_sklearn_logistic_loop_speed(benchmark) -> None:
    batch = nominal("logistic/kappa1", PROMPTS)
    mu = batch.task.params["mu"]
    ref = benchmark.pedantic(logistic_loop, args=(batch.x.numpy(), batch.y.numpy(), mu), rounds=1, iterations=1)
    np.testing.assert_allclose(logistic_optimum(batch.x, batch.y, mu).numpy(), ref, atol=1e-5)


@pytest.mark.benchmark(group=f"least squares: {PROMPTS} prompts of linear/kappa1")
def test_least_squares_speed(benchmark) -> None:
    batch = nominal("linear/kappa1", PROMPTS)
    w = benchmark.pedantic(solve, args=(batch.x, batch.y, 0.0), rounds=3, iterations=1)
    assert w.shape == (PROMPTS, batch.task.d)


@pytest.mark.benchmark(group=f"least squares: {PROMPTS} prompts of linear/kappa1")
def test_numpy_lstsq_loop_speed(benchmark) -> None:
    batch = nominal("linear/kappa1", PROMPTS)
    ref = benchmark.pedantic(lstsq_loop, args=(batch.x.numpy(), batch.y.numpy()), rounds=3, iterations=1)
    np.testing.assert_allclose(solve(batch.x, batch.y, 0.0).numpy(), ref, atol=1e-9)
