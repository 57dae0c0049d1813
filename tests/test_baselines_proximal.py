"""ISTA, FISTA and lasso-exact against scikit-learn, NumPy loops and least squares, on real task data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso, lars_path

from iclbench import Batch, tasks
from iclbench.baselines import proximal, tune_lasso
from iclbench.baselines.proximal import (
    GAP_TOL,
    FISTA,
    ISTA,
    LassoExact,
    LassoProblem,
    duality_gap,
    homotopy,
    lasso_exact,
    lasso_lambda,
)
from iclbench.cache import eval_set
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run

pytestmark = pytest.mark.usefixtures("session_fingerprints")  # the sets are generated once, in a separate process
LASSO_TASKS = [t.spec.name for t in tasks.select(["lasso"])]


def prompts(name: str, n: int, count: int, start: int = 0) -> Batch:
    data, _ = eval_set(tasks.get(name))
    sl = slice(start, start + count)
    return Batch(tasks.get(name).spec, data.x[sl, :n].double(), data.y[sl, :n].double(), data.x_query[sl].double())


def sklearn_lasso(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """sklearn minimises (1/(2n))||y - X b||^2 + alpha ||b||_1, so alpha = lambda / n."""
    fit = Lasso(alpha=lam / len(y), fit_intercept=False, tol=1e-14, max_iter=1_000_000).fit(x, y)
    return fit.coef_


def objective(x: np.ndarray, y: np.ndarray, b: np.ndarray, lam: float) -> float:
    return 0.5 * float(np.sum((y - x @ b) ** 2)) + lam * float(np.abs(b).sum())


@pytest.mark.parametrize("name, n", [("lasso/fixed", 10), ("lasso/random", 5), ("lasso/shift0.5", 40)])
def test_lasso_exact_matches_sklearn(name: str, n: int) -> None:
    batch = prompts(name, n, 24)
    lam = lasso_lambda(batch.task, n)
    b = lasso_exact(batch.x, batch.y, lam)
    ref = np.stack([sklearn_lasso(x, y, lam) for x, y in zip(batch.x.numpy(), batch.y.numpy())])
    gap = duality_gap(batch.x, batch.y, b, lam)
    print(f"{name} n={n}: max |b - sklearn| = {np.abs(b.numpy() - ref).max():.2e}, max gap = {gap.max():.2e}")
    np.testing.assert_allclose(b.numpy(), ref, atol=1e-4)
    assert bool((gap <= 1e-12 * 0.5 * (batch.y**2).sum(-1)).all())


@pytest.mark.parametrize("name", LASSO_TASKS)
def test_homotopy_alone_is_exact_at_every_length(name: str) -> None:
    """Without the refinement safety net, on every evaluation prompt: no path fails, every duality gap is small."""
    for n in tasks.get(name).spec.lengths:
        batch = prompts(name, n, 2048)
        lam = lasso_lambda(batch.task, n)
        b, failed = homotopy(batch.x, batch.y, lam)
        gap = duality_gap(batch.x, batch.y, b, lam)
        assert not bool(failed.any()), f"{name} n={n}: {int(failed.sum())} paths failed"
        within = gap <= GAP_TOL * 0.5 * (batch.y**2).sum(-1)
        assert bool(within.all()), f"{name} n={n}: {int((~within).sum())} gaps above tolerance"


def test_homotopy_follows_the_lars_path_through_drops() -> None:
    """Between the knots of scikit-learn's lars_path (method="lasso"), the solution is linear in lambda."""
    batch = prompts("lasso/shift0.5", 10, 16, start=1000)
    n, lams, refs, drops = 10, [], [], 0
    for x, y in zip(batch.x.numpy(), batch.y.numpy()):
        alphas, _, coefs = lars_path(x, y, method="lasso", alpha_min=1e-3)
        knots = alphas * n  # lars_path scales the squared loss by 1/n
        mids = (knots[:-1] + knots[1:]) / 2
        lams.append(mids[:12])
        refs.append(((coefs[:, :-1] + coefs[:, 1:]) / 2).T[:12])
        nonzero = coefs[:, :13] != 0
        drops += int((nonzero[:, :-1] & ~nonzero[:, 1:]).sum())
    assert drops >= 2, "the sample must hold paths on which a coordinate leaves the active set"
    counts = [len(m) for m in lams]
    x = batch.x.repeat_interleave(torch.tensor(counts), 0)
    y = batch.y.repeat_interleave(torch.tensor(counts), 0)
    b, failed = homotopy(x, y, torch.from_numpy(np.concatenate(lams)))
    assert not bool(failed.any())
    np.testing.assert_allclose(b.numpy(), np.concatenate(refs), atol=1e-8)


def test_exact_solution_with_a_repeated_column() -> None:
    """A column repeated makes X_A^T X_A singular when both copies would join: the path fails there and the
    refinement still reaches the optimum (not unique, so objectives are compared)."""
    batch = prompts("lasso/random", 10, 32)
    x = batch.x.clone()
    first = (x.mT @ batch.y.unsqueeze(-1)).squeeze(-1).abs().argmax(-1)
    x[:, :, -1] = x[torch.arange(32), :, first]
    lam = lasso_lambda(batch.task, 10)
    _, failed = homotopy(x, batch.y, lam)
    assert bool(failed.any())
    b = lasso_exact(x, batch.y, lam)
    assert bool((duality_gap(x, batch.y, b, lam) <= GAP_TOL * 0.5 * (batch.y**2).sum(-1)).all())
    for xi, yi, bi in zip(x.numpy(), batch.y.numpy(), b.numpy()):
        assert objective(xi, yi, bi, lam) <= objective(xi, yi, sklearn_lasso(xi, yi, lam), lam) + 1e-10


@pytest.mark.parametrize("name, n", [("lasso/random", 5), ("lasso/fixed", 40)])
def test_homotopy_with_a_tiny_penalty_fills_every_slot(name: str, n: int) -> None:
    """lambda = 1e-6: the path runs until min(n, d) coordinates are active, the capacity of its slots."""
    batch = prompts(name, n, 256)
    b, failed = homotopy(batch.x, batch.y, 1e-6)
    assert not bool(failed.any())
    assert int((b != 0).sum(-1).max()) == min(n, batch.task.d)
    assert bool((duality_gap(batch.x, batch.y, b, 1e-6) <= GAP_TOL * 0.5 * (batch.y**2).sum(-1)).all())


def test_widening_the_slots_leaves_the_solution(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path starts with FIRST_SLOTS slots for the active set and doubles them as prompts need more: from one
    slot (widened to 2, 4, 8, then min(n, d) = 10) the solutions are those with all 10 slots from the start, up to
    the round-off of sums over more zeros (measured at most 4 eps relative; allowed 2^10 eps)."""
    batch = prompts("lasso/fixed", 10, 64)
    lam = lasso_lambda(batch.task, 10)
    monkeypatch.setattr(proximal, "FIRST_SLOTS", 10)
    wide, wide_failed = homotopy(batch.x, batch.y, lam)
    monkeypatch.setattr(proximal, "FIRST_SLOTS", 1)
    narrow, narrow_failed = homotopy(batch.x, batch.y, lam)
    assert not bool(wide_failed.any() or narrow_failed.any())
    assert int((wide != 0).sum(-1).max()) > 8, "the sample must need the last widening"
    atol = 2**10 * torch.finfo(torch.float64).eps * float(wide.abs().max())
    torch.testing.assert_close(narrow, wide, rtol=0, atol=atol)


def test_paths_cut_short_are_flagged() -> None:
    batch = prompts("lasso/fixed", 10, 64)
    lam = lasso_lambda(batch.task, 10)
    exact, _ = homotopy(batch.x, batch.y, lam)
    b, failed = homotopy(batch.x, batch.y, lam, max_events=4)
    assert 0 < int(failed.sum()) < 64
    torch.testing.assert_close(b[~failed], exact[~failed], rtol=0, atol=1e-12)


def test_penalty_above_lambda_max_gives_zero() -> None:
    batch = prompts("lasso/fixed", 10, 8)
    lam_max = (batch.x.mT @ batch.y.unsqueeze(-1)).squeeze(-1).abs().amax(-1)
    b, failed = homotopy(batch.x, batch.y, lam_max * 1.01)
    assert bool((b == 0).all()) and not bool(failed.any())
    assert not b.is_inference() and not failed.is_inference()  # callers may update them in place


def test_duality_gap_bounds_the_suboptimality() -> None:
    batch = prompts("lasso/fixed", 10, 16)
    lam = 0.1
    x, y = batch.x.numpy(), batch.y.numpy()
    best = np.stack([sklearn_lasso(xi, yi, lam) for xi, yi in zip(x, y)])
    trial = best + np.random.default_rng(0).normal(scale=0.05, size=best.shape)
    gap = duality_gap(batch.x, batch.y, torch.from_numpy(trial), lam).numpy()
    excess = np.array([objective(xi, yi, ti, lam) - objective(xi, yi, bi, lam) for xi, yi, ti, bi in zip(x, y, trial, best)])
    assert np.all(excess > 0)
    assert np.all(gap >= excess - 1e-9)
    assert np.all(duality_gap(batch.x, batch.y, torch.from_numpy(best), lam).numpy() < 1e-8)


def numpy_proximal(x: np.ndarray, y: np.ndarray, lam: float, iters: int, accelerated: bool) -> np.ndarray:
    """The (iters, d) ISTA or FISTA iterates of one prompt, written out plainly."""
    lip = np.linalg.norm(x, 2) ** 2
    b = np.zeros(x.shape[1])
    z, t, out = b, 1.0, []
    for _ in range(iters):
        v = z + x.T @ (y - x @ z) / lip
        b_next = np.sign(v) * np.maximum(np.abs(v) - lam / lip, 0)
        if accelerated:
            t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
            z = b_next + (t - 1) / t_next * (b_next - b)
            t = t_next
        else:
            z = b_next
        b = b_next
        out.append(b)
    return np.stack(out)


@pytest.mark.parametrize("model", [ISTA(), FISTA()])
@pytest.mark.parametrize(
    "name, n", [("lasso/fixed", 10), ("lasso/shift0.1", 15), ("linear/kappa10", 20), ("linear/kappa100", 5)]
)
def test_iterates_match_a_numpy_loop(model: ISTA, name: str, n: int) -> None:
    batch = prompts(name, n, 3)
    lam = lasso_lambda(batch.task, n) if batch.task.family == "lasso" else 0.0
    pred = model.predict(batch)
    assert pred.steps.shape == (3, proximal.ITERATIONS, batch.task.n_queries)
    for i in range(3):
        path = numpy_proximal(batch.x[i].numpy(), batch.y[i].numpy(), lam, proximal.ITERATIONS, model.accelerated)
        np.testing.assert_allclose(pred.steps[i].numpy(), path @ batch.x_query[i].numpy().T, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(pred.w[i].numpy(), path[-1], rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(pred.y.numpy(), pred.steps[:, -1].numpy())


@pytest.mark.parametrize("accelerated, iters", [(False, 3000), (True, 1000)])
def test_converged_proximal_gradient_matches_sklearn(accelerated: bool, iters: int) -> None:
    batch = prompts("lasso/random", 40, 8)
    lam = lasso_lambda(batch.task, 40)
    *_, b = LassoProblem.of(batch.x, batch.y, lam).iterates(iters, accelerated)
    ref = np.stack([sklearn_lasso(x, y, lam) for x, y in zip(batch.x.numpy(), batch.y.numpy())])
    np.testing.assert_allclose(b.numpy(), ref, atol=1e-4)
    assert float(duality_gap(batch.x, batch.y, b, lam).max()) < 1e-8


@pytest.mark.parametrize("model", [ISTA(), FISTA()])
def test_lambda_zero_converges_to_least_squares(model: ISTA) -> None:
    batch = prompts("linear/kappa1", 80, 16)
    ref = np.stack([np.linalg.lstsq(x, y, rcond=None)[0] for x, y in zip(batch.x.numpy(), batch.y.numpy())])
    pred = model.predict(batch)
    np.testing.assert_allclose(pred.w.numpy(), ref, atol=1e-8)
    target = np.einsum("bqd,bd->bq", batch.x_query.numpy(), ref)
    first, last = (np.abs(pred.steps[:, k].numpy() - target).max() for k in (0, -1))
    assert last < 1e-7 < first


def test_lasso_exact_predicts_the_solution() -> None:
    batch = prompts("lasso/shift0.1", 10, 8)
    pred = LassoExact().predict(batch)
    lam = lasso_lambda(batch.task, 10)
    ref = np.stack([sklearn_lasso(x, y, lam) for x, y in zip(batch.x.numpy(), batch.y.numpy())])
    np.testing.assert_allclose(pred.w.numpy(), ref, atol=1e-4)
    np.testing.assert_allclose(pred.y.numpy(), np.einsum("bqd,bd->bq", batch.x_query.numpy(), ref), atol=1e-3)


def test_lambda_is_tuned_inside_the_grid_at_every_length() -> None:
    table = proximal.tuned_lambdas()
    assert set(table) == set(LASSO_TASKS) | {"garg/sparse-linear"}  # the noiseless one: test_baselines_garg.py
    for name in LASSO_TASKS:
        assert set(table[name]) == set(tasks.get(name).spec.lengths)
        assert all(tune_lasso.GRID[0] < lam < tune_lasso.GRID[-1] for lam in table[name].values())
    with pytest.raises(ValueError, match="prompt length 7"):
        lasso_lambda(tasks.get("lasso/fixed").spec, 7)


def test_tuning_criterion_prefers_the_stored_lambda() -> None:
    """The stored penalty of lasso/random at n = 5 minimises the tuning criterion over the grid."""
    task = tasks.get("lasso/random")
    errors = tune_lasso.grid_errors(task, 5)
    assert tune_lasso.GRID[int(np.argmin(errors))] == lasso_lambda(task.spec, 5)


def test_bad_input_is_rejected() -> None:
    batch = prompts("lasso/fixed", 10, 2)
    with pytest.raises(ValueError, match="non-negative"):
        LassoProblem.of(batch.x, batch.y, -1.0)
    with pytest.raises(ValueError, match="lambda > 0"):
        lasso_exact(batch.x, batch.y, 0.0)
    with pytest.raises(ValueError, match=r"\(B, n\)"):
        LassoProblem.of(batch.x, batch.y[:, :3], 0.1)
    with pytest.raises(ValueError, match="no tuned lasso penalty"):
        lasso_lambda(tasks.get("linear/kappa1").spec, 10)


@pytest.mark.parametrize("name, families", [("ista", ("lasso", "linear")), ("fista", ("lasso", "linear")), ("lasso-exact", ("lasso",))])
def test_runs_through_the_runner(name: str, families: tuple[str, ...]) -> None:
    chosen = tasks.select(["lasso/fixed", "lasso/random", "linear/kappa10", "logistic/kappa1"])
    doc = run(load_model(name), chosen, RunConfig(device="cpu", batch_size=16, prompts=16), progress=False)
    for task, entry in doc["tasks"].items():
        if tasks.get(task).spec.family in families:
            assert entry["status"] == "ok", entry.get("error")
            assert set(entry["lengths"]) == {str(n) for n in tasks.get(task).spec.lengths}
        else:
            assert entry["status"] == "unsupported"
