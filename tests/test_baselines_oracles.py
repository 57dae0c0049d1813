"""The exact oracles (logistic optimum, GP posterior mean) and averaging against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from fixtures.references import np_gram
from sklearn.linear_model import LogisticRegression

from iclbench import Batch
from iclbench.baselines.averaging import Averaging
from iclbench.baselines.oracles import GPPosterior, LogisticOptimum
from iclbench.cache import eval_set
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.tasks import get, select

pytestmark = pytest.mark.usefixtures("session_fingerprints")  # the sets are generated once, in a separate process
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PROMPTS = 16


def batch_of(name: str, n: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Batch:
    task = get(name)
    data, _ = eval_set(task)
    to = lambda t: t[:PROMPTS].to(device, dtype)  # noqa: E731
    return Batch(task.spec, to(data.x[:, :n]), to(data.y[:, :n]), to(data.x_query))


@pytest.mark.parametrize(("name", "n"), [("logistic/kappa1", 5), ("logistic/kappa1", 20), ("logistic/kappa10", 80)])
def test_logistic_optimum_matches_scikit_learn(name: str, n: int) -> None:
    batch = batch_of(name, n)
    mu = batch.task.params["mu"]
    pred = LogisticOptimum().predict(batch)
    for i in range(8):
        x, y, xq = (t[i].double().numpy() for t in (batch.x, batch.y, batch.x_query))
        # scikit-learn minimises C sum_i log-loss + ||w||^2 / 2: C = 1 / (mu n) gives the task's objective
        clf = LogisticRegression(C=1 / (mu * n), fit_intercept=False, solver="newton-cg", tol=1e-12, max_iter=1000)
        w = clf.fit(x, y).coef_[0]
        np.testing.assert_allclose(pred.w[i].double().numpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pred.y[i].double().numpy(), xq @ w, rtol=1e-5, atol=1e-5)


def test_logistic_optimum_reproduces_the_target() -> None:
    data, _ = eval_set(get("logistic/kappa10"))
    pred = LogisticOptimum().predict(batch_of("logistic/kappa10", 40))
    torch.testing.assert_close(pred.y, data.targets[40][:PROMPTS], rtol=1e-6, atol=1e-6)




@pytest.mark.parametrize("kind", ["exp", "relu"])
@pytest.mark.parametrize("n", [4, 14, 28])
def test_gp_posterior_matches_a_scipy_solve(kind: str, n: int) -> None:
    batch = batch_of(f"kernel/{kind}", n)
    pred = GPPosterior().predict(batch)
    for i in range(PROMPTS):
        x, y, xq = (t[i].double().numpy() for t in (batch.x, batch.y, batch.x_query))
        coef = scipy.linalg.solve(np_gram(x, x, kind), y, assume_a="pos")
        np.testing.assert_allclose(pred[i].double().numpy(), np_gram(xq, x, kind) @ coef, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [4, 8, 28])
def test_gp_posterior_on_the_singular_linear_kernel_is_the_min_norm_interpolant(n: int) -> None:
    batch = batch_of("kernel/linear", n)
    pred = GPPosterior().predict(batch)
    for i in range(PROMPTS):
        x, y, xq = (t[i].double().numpy() for t in (batch.x, batch.y, batch.x_query))
        w = scipy.linalg.lstsq(x, y)[0]
        np.testing.assert_allclose(pred[i].double().numpy(), xq @ w, rtol=1e-4, atol=1e-5)
    if n > batch.task.d:  # d + 1 noiseless points determine the linear function: exact prediction
        data, _ = eval_set(get("kernel/linear"))
        torch.testing.assert_close(pred, data.targets[n][:PROMPTS], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["linear/kappa10", "logistic/kappa1"])
def test_averaging_matches_numpy(name: str) -> None:
    batch = batch_of(name, 20)
    pred = Averaging().predict(batch)
    x, y, xq = (t.double().numpy() for t in (batch.x, batch.y, batch.x_query))
    w = np.stack([sum(yi * xi for xi, yi in zip(x[i], y[i])) / 20 for i in range(PROMPTS)])
    np.testing.assert_allclose(pred.w.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.y.numpy(), np.einsum("bqd,bd->bq", xq, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_same_result_on_every_device(device: str) -> None:
    for model, name, n in (
        (LogisticOptimum(), "logistic/kappa1", 10),
        (GPPosterior(), "kernel/exp", 14),
        (Averaging(), "linear/kappa1", 10),
    ):
        cpu = model.predict(batch_of(name, n))
        here = model.predict(batch_of(name, n, device=device))
        y_cpu, y_here = (p if isinstance(p, torch.Tensor) else p.y for p in (cpu, here))
        assert y_here.device.type == device and y_here.dtype == torch.float32
        torch.testing.assert_close(y_here.cpu(), y_cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "families"),
    [("averaging", ("linear", "logistic")), ("logistic-optimum", ("logistic",)), ("gp-posterior", ("kernel",))],
)
def test_runs_through_the_runner(name: str, families: tuple[str, ...]) -> None:
    doc = run(
        load_model(name),
        select(["linear", "logistic", "kernel", "lasso"]),
        RunConfig(device="cpu", prompts=32),
        progress=False,
    )
    for task, entry in doc["tasks"].items():
        if task.split("/")[0] not in families:
            assert entry["status"] == "unsupported"
            continue
        assert entry["status"] == "ok", entry.get("error")
        if name == "logistic-optimum":
            assert all(s["rel_err"]["db"] < -100 for s in entry["lengths"].values())
        if task == "kernel/linear":
            assert all(entry["lengths"][str(n)]["rel_err"]["db"] < -100 for n in (8, 14, 28))
