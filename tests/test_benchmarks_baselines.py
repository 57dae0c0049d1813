"""Timings of the batched baselines and of the per-prompt reference loops they replace (pytest-benchmark).

Each batched solver and its reference loop share a benchmark group, so the report puts them
side by side; compare runs with --benchmark-compare. Nothing here asserts on time; the loop
tests check that both give the same answers: on every evaluation prompt of the task when timed
(`pytest tests/test_benchmarks_baselines.py --benchmark-enable`), on the first `SAMPLE` in the
default run. `python benchmarks/baselines.py` makes the same full-size checks and prints the ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
"""All the prompts of a task when timed, as in `benchmarks/baselines.py` (the two scikit-learn loops: about 7 s)."""
SAMPLE = 64
"""The prompts of the default run."""


@pytest.fixture(scope="module")
def count(timed: bool) -> int:
    return PROMPTS if timed else SAMPLE


def nominal(name: str, count: int) -> Batch:
    task = tasks.get(name)
    data, _ = eval_set(task)
    n = task.spec.nominal
    return Batch(task.spec, data.x[:count, :n].double(), data.y[:count, :n].double(), data.x_query[:count].double())


@pytest.mark.benchmark(group=f"lasso: {PROMPTS} prompts of lasso/fixed")
def test_lasso_exact_speed(benchmark, count: int) -> None:
    batch = nominal("lasso/fixed", count)
    lam = lasso_lambda(batch.task, batch.n)
    b = benchmark.pedantic(lasso_exact, args=(batch.x, batch.y, lam), rounds=3, iterations=1)
    assert b.shape == (count, batch.task.d)


@pytest.mark.benchmark(group=f"lasso: {PROMPTS} prompts of lasso/fixed")
def test_sklearn_lasso_loop_speed(benchmark, count: int) -> None:
    batch = nominal("lasso/fixed", count)
    lam = lasso_lambda(batch.task, batch.n)
    ref = benchmark.pedantic(lasso_loop, args=(batch.x.numpy(), batch.y.numpy(), lam), rounds=1, iterations=1)
    np.testing.assert_allclose(lasso_exact(batch.x, batch.y, lam).numpy(), ref, atol=1e-8)


def test_fista_speed(benchmark) -> None:
    batch = nominal("lasso/fixed", 64)
    pred = benchmark.pedantic(FISTA().predict, args=(batch,), rounds=2, iterations=1)
    assert pred.steps.shape == (64, FISTA.iterations, batch.task.n_queries)


@pytest.mark.benchmark(group=f"logistic: {PROMPTS} prompts of logistic/kappa1")
def test_logistic_optimum_speed(benchmark, count: int) -> None:
    batch = nominal("logistic/kappa1", count)
    w = benchmark.pedantic(logistic_optimum, args=(batch.x, batch.y, batch.task.params["mu"]), rounds=3, iterations=1)
    assert torch.isfinite(w).all()


@pytest.mark.benchmark(group=f"logistic: {PROMPTS} prompts of logistic/kappa1")
def test_sklearn_logistic_loop_speed(benchmark, count: int) -> None:
    batch = nominal("logistic/kappa1", count)
    mu = batch.task.params["mu"]
    ref = benchmark.pedantic(logistic_loop, args=(batch.x.numpy(), batch.y.numpy(), mu), rounds=1, iterations=1)
    np.testing.assert_allclose(logistic_optimum(batch.x, batch.y, mu).numpy(), ref, atol=1e-5)


@pytest.mark.benchmark(group=f"least squares: {PROMPTS} prompts of linear/kappa1")
def test_least_squares_speed(benchmark, count: int) -> None:
    batch = nominal("linear/kappa1", count)
    w = benchmark.pedantic(solve, args=(batch.x, batch.y, 0.0), rounds=3, iterations=1)
    assert w.shape == (count, batch.task.d)


@pytest.mark.benchmark(group=f"least squares: {PROMPTS} prompts of linear/kappa1")
def test_numpy_lstsq_loop_speed(benchmark, count: int) -> None:
    batch = nominal("linear/kappa1", count)
    ref = benchmark.pedantic(lstsq_loop, args=(batch.x.numpy(), batch.y.numpy()), rounds=3, iterations=1)
    np.testing.assert_allclose(solve(batch.x, batch.y, 0.0).numpy(), ref, atol=1e-9)


def test_the_report_runs_at_a_tiny_size(tmp_path: Path, session_fingerprints: dict[str, str]) -> None:
    """`python benchmarks/baselines.py` end to end on 8 prompts: one baseline's suite run and every solver's loop."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines.py"
    cmd = [sys.executable, str(script), "--models", "zero", "--prompts", "8", "--repeats", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    run = next(line.split() for line in lines if line.startswith("zero "))
    assert float(run[1]) > 0 and float(run[2]) > 0 and run[4:6] == [str(len(session_fingerprints)), "ok"]
    for solver in ("lasso-exact", "logistic-optimum", "ridge, ols", "relu-nn"):
        row = next(line for line in lines if line.startswith(solver))
        assert row.endswith(" ok") and "x " in row
    doc = json.loads((tmp_path / "zero" / "zero.json").read_text())
    assert doc["run"]["prompts"] == 8 and doc["run"]["limited"]
