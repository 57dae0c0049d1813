"""Baselines on the ar family (vector labels), each against a per-prompt NumPy reference or a closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iclbench import Batch
from iclbench.baselines import REGISTRY, averaging, gd, oracles, ridge, zero
from iclbench.cache import eval_set
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.tasks import get, select


def sample(name: str, batch: int, n: int, seed: int = 0) -> Batch:
    task = get(name)
    return task.sample(batch, n, task.train_generator(seed), dtype=torch.float64).batch


@pytest.mark.parametrize("name, n", [("ar/uniform", 5), ("ar/uniform", 20), ("ar/noisy", 10), ("ar/gaussian", 50)])
def test_ridge_and_ols_match_per_prompt_solves(name: str, n: int) -> None:
    batch = sample(name, 16, n)
    lam = ridge.bayes_lambda(batch.task)
    assert lam == (0.0 if batch.task.noise == 0 else pytest.approx(10 * 0.01**2))
    for model, penalty in ((ridge.Ridge(), lam), (ridge.LeastSquares(), 0.0)):
        pred = model.predict(batch)
        assert pred.y.shape == (16, 1, 10) and pred.w.shape == (16, 10, 10)
        for i in range(16):  # W^T solves min ||X W^T - Y||^2 + lam ||W||^2, one prompt at a time
            x, y = batch.x[i].numpy(), batch.y[i].numpy()
            if penalty:
                wt = np.linalg.solve(x.T @ x + penalty * np.eye(10), x.T @ y)
            else:
                wt = np.linalg.lstsq(x, y, rcond=None)[0]  # minimum-norm for n < d
            np.testing.assert_allclose(pred.w[i].numpy(), wt.T, rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(pred.y[i].numpy(), batch.x_query[i].numpy() @ wt, rtol=1e-8, atol=1e-10)


def test_ols_recovers_the_true_w_of_noiseless_prompts_from_d_transitions() -> None:
    task = get("ar/uniform")
    s = task.sample(64, 10, task.train_generator(1), dtype=torch.float64)
    w = ridge.LeastSquares().predict(s.batch).w
    assert (w - s.hidden["w"]).abs().max() < 1e-4  # float32 states: exact up to their rounding


@pytest.mark.parametrize("name, n", [("ar/uniform", 5), ("ar/noisy", 20), ("ar/gaussian", 50)])
def test_gd_matches_a_per_prompt_loop_and_its_first_step_is_the_mesa_update(name: str, n: int) -> None:
    batch = sample(name, 8, n)
    eta, budget = 0.7, 40
    steps, w_last = gd.descend(batch, eta, budget)
    assert steps.shape == (8, budget, 1, 10) and w_last.shape == (8, 10, 10)
    for i in range(8):
        x, y, xq = batch.x[i].numpy(), batch.y[i].numpy(), batch.x_query[i].numpy()
        w = np.zeros((10, 10))
        for k in range(budget):
            grad = sum(np.outer(w @ x[t] - y[t], x[t]) for t in range(n)) / n
            w = w - eta * grad
            np.testing.assert_allclose(steps[i, k].numpy(), xq @ w.T, rtol=1e-9, atol=1e-12)
        mesa = eta / n * sum(np.outer(x[t + 1] if t + 1 < n else y[t], x[t]) for t in range(n))  # (eta/n) sum x_{t+1} x_t^T
        np.testing.assert_allclose(steps[i, 0].numpy(), xq @ mesa.T, rtol=1e-9, atol=1e-12)


def test_gd_converges_to_least_squares_at_its_linear_rate() -> None:
    batch = sample("ar/noisy", 16, 50)
    eta, budget = 1.0, 500
    _, w_last = gd.descend(batch, eta, budget)
    w_ols = ridge.LeastSquares().predict(batch).w
    for i in range(16):  # ||W_K - W*|| <= max_j |1 - eta lambda_j|^K ||W*|| over the eigenvalues of X^T X / n
        x = batch.x[i].numpy()
        lam = np.linalg.eigvalsh(x.T @ x / 50)
        rate = np.abs(1 - eta * lam).max()
        assert rate < 1
        bound = rate**budget * np.linalg.norm(w_ols[i].numpy()) * 1.001 + 1e-12
        assert np.linalg.norm((w_last[i] - w_ols[i]).numpy()) <= bound


def test_averaging_and_zero_on_vector_labels() -> None:
    batch = sample("ar/gaussian", 8, 20)
    pred = averaging.Averaging().predict(batch)
    for i in range(8):
        w = sum(np.outer(batch.y[i, t].numpy(), batch.x[i, t].numpy()) for t in range(20)) / 20
        np.testing.assert_allclose(pred.w[i].numpy(), w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(pred.y[i].numpy(), batch.x_query[i].numpy() @ w.T, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(zero.Zero().predict(batch).numpy(), np.zeros((8, 1, 10)))


def test_true_w_oracle_predicts_the_target_and_knows_only_pinned_prompts() -> None:
    task = get("ar/noisy")
    data, _ = eval_set(task)
    oracle = oracles.TrueW()
    pick = torch.tensor([2047, 3, 0, 1000])
    pred = oracle.predict(Batch(task.spec, data.x[pick, :10], data.y[pick, :10], data.x_query[pick]))
    assert torch.equal(pred.w, data.hidden["w"][pick])
    want = torch.einsum("bij,bqj->bqi", data.hidden["w"][pick].double(), data.x_query[pick].double())
    torch.testing.assert_close(pred.y.double(), want.float().double(), rtol=0, atol=0)
    assert ((pred.y - data.targets[10][pick]).abs() <= 2**-23 * data.targets[10][pick].abs()).all()
    fresh = task.generate(seed=12345)
    with pytest.raises(ValueError, match="prompt 0 of this batch is not in the pinned evaluation set of ar/noisy"):
        oracle.predict(Batch(task.spec, fresh.x[:4, :10], fresh.y[:4, :10], fresh.x_query[:4]))
    spliced = data.x[pick, :10].clone()
    spliced[1, 5] = fresh.x[0, 5]  # a pinned first state with another sequence after it
    with pytest.raises(ValueError, match="prompt 1 of this batch"):
        oracle.predict(Batch(task.spec, spliced, data.y[pick, :10], data.x_query[pick]))
    assert not oracle.supports(get("linear/kappa1").spec)


def test_every_baseline_scores_ar_or_declares_it_unsupported() -> None:
    tasks = select(["ar/noisy"])
    scored = {}
    for name in REGISTRY:
        doc = run(load_model(name), tasks, RunConfig(device="cpu", prompts=32), progress=False)
        entry = doc["tasks"]["ar/noisy"]
        assert entry["status"] in ("ok", "unsupported"), f"{name}: {entry.get('error')}"
        if entry["status"] == "ok":
            scored[name] = {n: v["rel_err"]["db"] for n, v in entry["lengths"].items()}
    assert set(scored) == {"zero", "ridge", "ols", "averaging", "gd", "gd@1", "gd@4", "gd@16", "true-w"}
    assert all(v == 0 for v in scored["zero"].values())
    assert all(v < -120 for v in scored["true-w"].values())  # float32 round-off of W x_query
    assert scored["ridge"]["50"] < scored["gd"]["50"] < scored["averaging"]["50"] < 0
