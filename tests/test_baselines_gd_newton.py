"""Gradient descent and iterative Newton against closed forms, NumPy loops and exact solvers."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from fixtures.references import np_gram

from iclbench import Batch, metrics
from iclbench.baselines import gd, newton, tune_gd
from iclbench.baselines.ridge import LeastSquares, Ridge
from iclbench.cache import eval_set
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.solvers import logistic_optimum
from iclbench.tasks import get, select

pytestmark = pytest.mark.usefixtures("session_fingerprints")  # the sets are generated once, in a separate process
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PROMPTS = 12


def batch_of(
    name: str, n: int, prompts: int = PROMPTS, dtype: torch.dtype = torch.float64, device: str = "cpu"
) -> Batch:
    """The first `prompts` evaluation prompts of task `name` at length `n`."""
    task = get(name)
    data, _ = eval_set(task)
    to = lambda t: t[:prompts].to(device, dtype)  # noqa: E731
    return Batch(task.spec, to(data.x[:, :n]), to(data.y[:, :n]), to(data.x_query))




def quadratic_gd_closed_form(a: np.ndarray, b: np.ndarray, eta: float, k: int) -> np.ndarray:
    """sum_{j<k} (I - eta A)^j eta b, by the eigendecomposition of the symmetric A."""
    lam, u = np.linalg.eigh(a)
    factor = np.where(np.abs(eta * lam) > 1e-300, (1 - (1 - eta * lam) ** k) / np.where(lam == 0, 1, lam), k * eta)
    return u @ (factor * (u.T @ b))


# ---------------------------------------------------------------- gradient descent


def test_least_squares_gd_matches_closed_form() -> None:
    batch = batch_of("linear/kappa10", 10)
    eta, budget = 0.15, 40
    steps, w = gd.descend(batch, eta, budget)
    for i in range(PROMPTS):
        x, y, xq = (t[i].numpy() for t in (batch.x, batch.y, batch.x_query))
        a, b = x.T @ x / len(y), x.T @ y / len(y)
        for k in (1, 2, 7, budget):
            w_k = quadratic_gd_closed_form(a, b, eta, k)
            np.testing.assert_allclose(steps[i, k - 1].numpy(), xq @ w_k, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(w[i].numpy(), quadratic_gd_closed_form(a, b, eta, budget), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["exp", "relu", "linear"])
def test_functional_gd_matches_closed_form_in_coefficients(kind: str) -> None:
    batch = batch_of(f"kernel/{kind}", 14)
    eta, budget = 0.8, 30
    steps, w = gd.descend(batch, eta, budget)
    assert w is None
    n = batch.n
    for i in range(PROMPTS):
        x, y, xq = (t[i].numpy() for t in (batch.x, batch.y, batch.x_query))
        k_ctx, k_q = np_gram(x, x, kind), np_gram(xq, x, kind)
        for k in (1, 5, budget):
            alpha = quadratic_gd_closed_form(k_ctx / n, y / n, eta, k)
            np.testing.assert_allclose(steps[i, k - 1].numpy(), k_q @ alpha, rtol=1e-8, atol=1e-10)


def test_functional_gd_with_linear_kernel_is_least_squares_gd() -> None:
    batch = batch_of("kernel/linear", 8)
    via_kernel = gd.descend(batch, 1.3, 25)[0]
    via_weights = gd.least_squares(batch.x, batch.y, batch.x_query, 1.3, 25)[0]
    torch.testing.assert_close(via_kernel, via_weights, rtol=1e-10, atol=1e-12)


def test_logistic_gd_matches_numpy_loop() -> None:
    batch = batch_of("logistic/kappa10", 20)
    mu, eta, budget = batch.task.params["mu"], 0.7, 50
    steps, _ = gd.descend(batch, eta, budget)
    for i in range(PROMPTS):
        x, y, xq = (t[i].numpy() for t in (batch.x, batch.y, batch.x_query))
        w = np.zeros(x.shape[1])
        for k in range(budget):
            grad = np.zeros_like(w)
            for xi, yi in zip(x, y):
                grad -= yi * xi / (1 + np.exp(yi * xi @ w)) / len(y)
            w = w - eta * (grad + mu * w)
            np.testing.assert_allclose(steps[i, k].numpy(), xq @ w, rtol=1e-9, atol=1e-12)


def test_every_task_and_length_has_a_tuned_step() -> None:
    model = gd.GradientDescent()
    stored = json.loads(gd.STEP_SIZES_FILE.read_text())
    assert stored["tuning_seed"] == 7 and stored["tuning_budget"] == 12
    for task in select(["linear", "logistic", "kernel", "ar"]):
        assert model.supports(task.spec)
        assert all(model.supports_length(task.spec, n) for n in task.spec.lengths)
        assert all(eta > 0 for eta in stored["step_sizes"][task.spec.name].values())
    assert not model.supports(get("lasso/fixed").spec)
    with pytest.raises(ValueError, match="lasso/fixed"):
        gd.descend(batch_of("lasso/fixed", 10), 0.1, 3)


def test_tuned_steps_are_stable_on_fresh_prompts() -> None:
    """eta * L < 2 (GD cannot diverge over its budget) on prompts the tuning never saw."""
    step_sizes = gd.load_step_sizes()
    for task in select(["linear", "logistic", "kernel", "ar"]):
        spec = task.spec
        for n in spec.lengths:
            generator = task.train_generator(tune_gd.TUNING_SEED + 1)
            batch = task.sample(256, n, generator, n_queries=1, dtype=torch.float64).batch
            top = float(tune_gd.smoothness(batch).max())
            x = batch.x[int(tune_gd.smoothness(batch).argmax())].numpy()
            if spec.family == "kernel":
                ref = np.linalg.eigvalsh(np_gram(x, x, spec.params["kernel"])).max() / n
            else:
                ref = np.linalg.eigvalsh(x.T @ x / n).max() * (0.25 if spec.family == "logistic" else 1)
                ref += spec.params["mu"] if spec.family == "logistic" else 0
            assert math.isclose(top, ref, rel_tol=1e-9)
            assert step_sizes[spec.name][n] * top < 2, f"{spec.name} n={n}"


def sequential_gd(hess: torch.Tensor, rhs: torch.Tensor, query: torch.Tensor, eta: float, budget: int) -> torch.Tensor:
    """W <- W - eta (W H - R) from W = 0, step after step (as `gd` ran before its closed form): (B, budget, q, m)."""
    w, out = torch.zeros_like(rhs), []
    for _ in range(budget):
        w = w - eta * (w @ hess - rhs)
        out.append(query @ w.mT)
    return torch.stack(out, 1)


def sequential_steps(batch: Batch, eta: float, budget: int) -> torch.Tensor:
    """`gd.descend`'s predictions (B, budget, q[, m]) by `sequential_gd` (logistic: `gd.logistic`), in float64."""
    x, y, xq, n = batch.x.double(), batch.y.double(), batch.x_query.double(), batch.n
    family = batch.task.family
    if family == "logistic":
        return gd.logistic(x, y, xq, eta, batch.task.params["mu"], budget)[0]
    if family == "kernel":
        kind = batch.task.params["kernel"]
        k_context, k_query = np_kernel(x, x, kind), np_kernel(xq, x, kind)
        return sequential_gd(k_context / n, y.unsqueeze(-2) / n, k_query, eta, budget)[..., 0]
    labels = y if family == "ar" else y.unsqueeze(-1)
    steps = sequential_gd(x.mT @ x / n, labels.mT @ x / n, xq, eta, budget)
    return steps if family == "ar" else steps[..., 0]


def np_kernel(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np_gram(p.numpy(), r.numpy(), kind)) for p, r in zip(a, b)])


ROUND_OFF = 1e-11
"""The closed form and the sequential updates agree to this fraction of a prompt's largest prediction (float64;
measured at most 5e-13 over 64 prompts of every quadratic task and length)."""


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    "name, n",
    [("linear/kappa100", 5), ("linear/noisy", 40), ("kernel/exp", 28), ("kernel/relu", 4), ("kernel/linear", 14),
     ("ar/gaussian", 10), ("ar/noisy", 50)],
)
def test_closed_form_matches_the_sequential_updates_over_the_whole_budget(name: str, n: int) -> None:
    """Every one of the 1,024 steps at the tuned step size, float64, to `ROUND_OFF` (n = 5 < d: singular X^T X)."""
    batch = batch_of(name, n, 6)
    eta = gd.load_step_sizes()[name][n]
    steps, w = gd.descend(batch, eta, gd.BUDGET)
    ref = sequential_steps(batch, eta, gd.BUDGET)
    scale = ref.flatten(1).abs().amax(1)
    assert bool(((steps - ref).flatten(1).abs().amax(1) <= ROUND_OFF * scale).all())
    if batch.task.family != "kernel":  # the last w, against the predictions it makes
        torch.testing.assert_close(torch.einsum("bqd,b...d->bq...", batch.x_query, w), ref[:, -1], rtol=0, atol=1e-12)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("eta", [0.3, 0.6])
def test_closed_form_follows_oscillating_and_diverging_modes(eta: float) -> None:
    """Beyond the tuned steps: eta lambda in (1, 2) (negative bases, |1 - eta lambda| < 1) and above 2 (diverging)."""
    batch = batch_of("linear/kappa1", 20, 8)
    hess = batch.x.mT @ batch.x / 20
    t = eta * torch.linalg.eigvalsh(hess)
    assert bool((t > 1).any()) and bool((t > 2).any()) == (eta == 0.6)
    steps, _ = gd.descend(batch, eta, 64)
    ref = sequential_steps(batch, eta, 64)
    assert bool(((steps - ref).flatten(1).abs().amax(1) <= ROUND_OFF * ref.flatten(1).abs().amax(1)).all())
    assert (float(ref.abs().max()) > 1e6) == (eta == 0.6)


def test_geometric_sums_are_exact_at_every_rate() -> None:
    """sum_{i<k} (1 - t)^i against exact rational arithmetic: t = 0, tiny, 1 (0^0 = 1), oscillating, diverging, < 0."""
    ts = [0.0, 1e-300, 1e-12, 0.3, 1 - 2**-40, 1.0, 1.5, 2.0, 2.3, -1e-3]
    ks = [0, 1, 2, 3, 17, 1024]
    got = gd.geometric_sums(torch.tensor(ts, dtype=torch.float64), torch.tensor(ks, dtype=torch.float64))
    for i, t in enumerate(ts):
        for j, k in enumerate(ks):
            r = 1 - Fraction(t)
            exact = float(sum(r**p for p in range(k))) if k < 20 or t == 0 else float((1 - r**k) / Fraction(t))
            assert math.isclose(float(got[i, j]), exact, rel_tol=1e-13, abs_tol=0.0), (t, k, float(got[i, j]), exact)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ["linear/kappa10", "kernel/relu", "ar/uniform", "logistic/kappa10"])
def test_per_step_errors_are_those_of_the_sequential_updates(name: str) -> None:
    """The scored numbers: each step's relative error (dB) on 64 prompts at the nominal length, as a float32 run
    stores the steps, within 0.01 dB of the sequential updates' at every step."""
    task = get(name)
    n = task.spec.nominal
    batch = batch_of(name, n, 64, dtype=torch.float32)
    eta = gd.load_step_sizes()[name][n]
    target = eval_set(task)[0].targets[n][:64]
    curves = []
    for steps in (gd.GradientDescent().predict(batch).steps, sequential_steps(batch, eta, gd.BUDGET).float()):
        err = metrics.StepErrors(target).add(steps).total() / (target.double() ** 2).sum()
        curves.append(torch.tensor([metrics.db(float(e)) for e in err]))
    floor = 20 * math.log10(torch.finfo(torch.float32).eps)  # float32 rounding: converged logits
    above = (curves[0] > floor) | (curves[1] > floor)
    assert int(above.sum()) > 100
    assert float((curves[0] - curves[1])[above].abs().max()) <= 0.01


def test_gd_model_runs_the_tuned_step_for_its_budget() -> None:
    batch = batch_of("linear/kappa1", 20, dtype=torch.float32)
    eta = json.loads(gd.STEP_SIZES_FILE.read_text())["step_sizes"]["linear/kappa1"]["20"]
    pred = gd.GradientDescent().predict(batch)
    assert pred.steps.shape == (PROMPTS, gd.BUDGET, batch.x_query.shape[1]) and gd.BUDGET >= 64
    assert pred.y.dtype == torch.float32 and pred.steps.dtype == torch.float32 and pred.w.dtype == torch.float32
    torch.testing.assert_close(pred.y, pred.steps[:, -1])
    reference = gd.least_squares(batch.x.double(), batch.y.double(), batch.x_query.double(), eta, gd.BUDGET)[0]
    torch.testing.assert_close(pred.steps, reference.float())


def test_gd_converges_to_least_squares_on_an_overdetermined_task() -> None:
    batch = batch_of("linear/kappa1", 80, dtype=torch.float32)
    pred = gd.GradientDescent().predict(batch)
    ols = LeastSquares().predict(batch)
    torch.testing.assert_close(pred.y, ols.y, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- iterative Newton


@pytest.mark.parametrize("order", [2, 3])
def test_newton_schulz_converges_with_its_order(order: int) -> None:
    batch = batch_of("linear/kappa10", 40, prompts=6)
    a = batch.x.mT @ batch.x
    errors = []
    for m in newton.newton_schulz(a, order, newton.budget(order)):
        errors.append([np.linalg.norm(np.eye(20) - a[i].numpy() @ m[i].numpy(), 2) for i in range(6)])
    errors = np.array(errors)
    for k in range(len(errors) - 1):
        # (I - A M_{k+1}) = (I - A M_k)^p exactly, so the spectral norm is raised to the power p
        assert np.all(errors[k + 1] <= errors[k] ** order * (1 + 1e-6) + 1e-11)
    assert np.all(errors[-1] < 1e-10)
    first_below = np.argmax(errors < 0.5, axis=0)
    assert np.all(errors[first_below + 2, range(6)] < 0.5 ** (order**2) * 1.001)
    for i in range(6):
        np.testing.assert_allclose(m[i].numpy(), np.linalg.inv(a[i].numpy()), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("model_cls", [newton.Newton, newton.Newton3])
@pytest.mark.parametrize(
    ("name", "n"),
    [("linear/kappa1", 5), ("linear/kappa100", 10), ("linear/kappa10", 40), ("linear/noisy", 10), ("linear/noisy", 80)],
)
def test_newton_agrees_with_ridge_at_convergence(model_cls: type[newton.Newton], name: str, n: int) -> None:
    batch = batch_of(name, n)
    pred = model_cls().predict(batch)
    exact = Ridge().predict(batch)
    torch.testing.assert_close(pred.w, exact.w, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(pred.y, exact.y, rtol=1e-8, atol=1e-10)
    if batch.task.noise == 0:
        for i in range(PROMPTS):
            x, y = batch.x[i].numpy(), batch.y[i].numpy()
            w_min_norm = np.linalg.lstsq(x, y, rcond=None)[0]
            np.testing.assert_allclose(pred.w[i].numpy(), w_min_norm, rtol=1e-7, atol=1e-9)
    else:
        lam = 0.5**2 * 20  # noise^2 / prior variance 1/d
        for i in range(PROMPTS):
            x, y = batch.x[i].numpy(), batch.y[i].numpy()
            w_ridge = np.linalg.solve(x.T @ x + lam * np.eye(20), x.T @ y)
            np.testing.assert_allclose(pred.w[i].numpy(), w_ridge, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("model_cls", [newton.Newton, newton.Newton3])
@pytest.mark.parametrize(
    ("kind", "n"), [("exp", 8), ("exp", 14), ("relu", 14), ("relu", 28), ("linear", 4), ("linear", 14)]
)
def test_kernel_newton_matches_a_direct_solve(model_cls: type[newton.Newton], kind: str, n: int) -> None:
    batch = batch_of(f"kernel/{kind}", n)
    pred = model_cls().predict(batch)
    for i in range(PROMPTS):
        x, y, xq = (t[i].numpy() for t in (batch.x, batch.y, batch.x_query))
        k_ctx = np_gram(x, x, kind)
        # the linear kernel's Gram matrix has rank d = 5 < n: minimum-norm interpolant
        coef = np.linalg.lstsq(k_ctx, y, rcond=1e-10)[0] if kind == "linear" else np.linalg.solve(k_ctx, y)
        np.testing.assert_allclose(pred.y[i].numpy(), np_gram(xq, x, kind) @ coef, rtol=1e-6, atol=1e-8)


def test_damped_newton_converges_to_the_logistic_optimum() -> None:
    for name, n in (("logistic/kappa1", 5), ("logistic/kappa10", 20), ("logistic/kappa10", 80)):
        batch = batch_of(name, n)
        pred = newton.Newton().predict(batch)
        w_mu = logistic_optimum(batch.x, batch.y, batch.task.params["mu"])
        torch.testing.assert_close(pred.y, torch.einsum("bqd,bd->bq", batch.x_query, w_mu), rtol=1e-9, atol=1e-10)
        loss = [float(newton_loss) for newton_loss in _losses(batch)]
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(loss)), "damped Newton must decrease the loss"
    assert not newton.Newton3().supports(get("logistic/kappa1").spec)


def test_damped_newton_iterates_match_numpy() -> None:
    batch = batch_of("logistic/kappa10", 10)
    mu = batch.task.params["mu"]
    iterates = torch.stack(list(newton.damped_newton(batch.x, batch.y, mu, 8)), 1)
    for i in range(PROMPTS):
        x, y = batch.x[i].numpy(), batch.y[i].numpy()
        w = np.zeros(x.shape[1])
        for k in range(8):
            p = 1 / (1 + np.exp(y * (x @ w)))
            g = -x.T @ (y * p) / len(y) + mu * w
            h = (x.T * (p * (1 - p))) @ x / len(y) + mu * np.eye(len(w))
            step = np.linalg.solve(h, g)
            w = w - 2 * np.sqrt(mu) / (2 * np.sqrt(mu) + np.sqrt(g @ step)) * step
            np.testing.assert_allclose(iterates[i, k].numpy(), w, rtol=1e-9, atol=1e-12)


def _losses(batch: Batch) -> list[float]:
    mu = batch.task.params["mu"]
    out = []
    for w in newton.damped_newton(batch.x, batch.y, mu, 30):
        margins = batch.y * torch.einsum("bnd,bd->bn", batch.x, w)
        out.append(float((torch.log1p(torch.exp(-margins)).mean(-1) + mu / 2 * (w * w).sum(-1)).sum()))
    return out


def test_newton_budgets() -> None:
    assert newton.budget(2) == 64 and newton.budget(3) == 41
    pred = newton.Newton3().predict(batch_of("kernel/exp", 8, dtype=torch.float32))
    assert pred.steps.shape[1] == 41 and pred.steps.dtype == torch.float32


# ---------------------------------------------------------------- devices and the runner


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model_cls", [gd.GradientDescent, newton.Newton, newton.Newton3])
def test_same_result_on_every_device(device: str, model_cls: type) -> None:
    for name, n in (("linear/kappa10", 20), ("kernel/relu", 14), ("logistic/kappa1", 10)):
        model = model_cls()
        if not model.supports(get(name).spec):
            continue
        cpu = model.predict(batch_of(name, n, dtype=torch.float32))
        here = model.predict(batch_of(name, n, dtype=torch.float32, device=device))
        assert here.y.device.type == device and here.steps.device.type == device
        torch.testing.assert_close(here.steps.cpu(), cpu.steps, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["gd", "newton", "newton3"])
def test_runs_through_the_runner(name: str) -> None:
    tasks = select(["linear/noisy", "logistic/kappa10", "kernel/relu", "lasso/fixed"])
    doc = run(load_model(name), tasks, RunConfig(device="cpu", prompts=8), progress=False)
    for task, entry in doc["tasks"].items():
        if task.startswith("lasso") or (name == "newton3" and task.startswith("logistic")):
            assert entry["status"] == "unsupported"
            continue
        assert entry["status"] == "ok", entry.get("error")
        for scores in entry["lengths"].values():
            assert math.isfinite(scores["rel_err"]["value"])
            assert len(scores["steps_rel_err_db"]) >= 41
