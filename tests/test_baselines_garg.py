"""Garg et al.'s baselines on their function classes, each against an independent per-prompt reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.references import network_loop
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Lasso
from sklearn.neighbors import KNeighborsRegressor
from sklearn.tree import DecisionTreeRegressor

from iclbench import Batch, tasks
from iclbench.baselines import network, tune_lasso
from iclbench.baselines.knn import NearestNeighbours
from iclbench.baselines.network import ReluNetwork
from iclbench.baselines.proximal import LassoExact, lasso_lambda, tuned_lambdas
from iclbench.baselines.trees import Boosting, Tree, TreeDepth4
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run

pytestmark = pytest.mark.usefixtures("one_thread")
GARG = [name for name, task in tasks.TASKS.items() if task.spec.family == "garg"]


def prompts(name: str, n: int, batch: int, seed: int = 0) -> Batch:
    task = tasks.get(name)
    return task.sample(batch, n, task.train_generator(seed), dtype=torch.float64).batch


@pytest.mark.parametrize("name, n", [("garg/decision-tree", 10), ("garg/relu2nn", 100), ("garg/quadratic", 5)])
def test_three_nearest_neighbours_match_sklearn(name: str, n: int) -> None:
    batch = prompts(name, n, 6)
    pred = NearestNeighbours().predict(batch)
    for b in range(6):
        knn = KNeighborsRegressor(n_neighbors=3, algorithm="brute").fit(batch.x[b].numpy(), batch.y[b].numpy())
        np.testing.assert_allclose(pred[b].numpy(), knn.predict(batch.x_query[b].numpy()), rtol=1e-12, atol=1e-12)


def test_fewer_points_than_neighbours_average_them_all() -> None:
    spec = tasks.get("garg/quadratic").spec
    x, y = torch.tensor([[[0.0, 0.0], [3.0, 0.0]]]), torch.tensor([[1.0, 2.0]])
    batch = Batch(spec, x, y, torch.tensor([[[0.1, 0.0], [5.0, 5.0]]]))
    assert NearestNeighbours().predict(batch).tolist() == [[1.5, 1.5]]


@pytest.mark.parametrize("model, reference", [
    (Tree(), lambda: DecisionTreeRegressor(random_state=0)),
    (TreeDepth4(), lambda: DecisionTreeRegressor(max_depth=4, random_state=0)),
    (Boosting(), lambda: HistGradientBoostingRegressor(random_state=0)),
])
def test_tree_learners_are_scikit_learn_fitted_on_each_prompt(model, reference) -> None:
    """Identical predictions (the same estimator, settings and float64 arrays: scikit-learn is deterministic once its
    random_state is fixed), in a batch of any size."""
    batch = prompts("garg/decision-tree", 50, 5)
    pred = model.predict(batch)
    assert pred.dtype == torch.float64 and pred.shape == (5, 8)
    for b in range(5):
        fitted = reference().fit(batch.x[b].numpy(), batch.y[b].numpy())
        assert np.array_equal(pred[b].numpy(), fitted.predict(batch.x_query[b].numpy()))
    alone = model.predict(Batch(batch.task, batch.x[3:4], batch.y[3:4], batch.x_query[3:4]))
    assert torch.equal(alone[0], pred[3])


def test_trees_predict_context_labels_and_their_means() -> None:
    """Independent of scikit-learn's internals: a tree grown to pure leaves predicts a context label (labels are
    distinct); one of depth 4 predicts at most 16 values, means of context labels."""
    batch = prompts("garg/relu2nn", 30, 4)
    queries = torch.randn(4, 200, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    wide = Batch(batch.task, batch.x, batch.y, queries)
    full, shallow = Tree().predict(wide), TreeDepth4().predict(wide)
    assert (full.unsqueeze(-1) == batch.y.unsqueeze(1)).any(-1).all()
    for b in range(4):
        assert 2 <= len(set(shallow[b].tolist())) <= 16
    assert not torch.equal(full, shallow)


def test_boosting_cannot_split_below_forty_points() -> None:
    """scikit-learn's default of 20 points a leaf: below n = 40 every tree is one leaf, so boosting predicts the
    mean label (the initial prediction, every tree's gradient step then zero)."""
    batch = prompts("garg/sparse-linear", 30, 3)
    pred = Boosting().predict(batch)
    np.testing.assert_allclose(pred.numpy(), batch.y.mean(1, keepdim=True).expand(-1, 8).numpy(), rtol=1e-12)


@pytest.mark.parametrize("name, n", [("garg/relu2nn", 25), ("garg/decision-tree", 10)])
def test_the_network_is_adam_on_each_prompt_alone(name: str, n: int) -> None:
    batch = prompts(name, n, 3, seed=4)
    pred = ReluNetwork().predict(batch)
    assert pred.steps.shape == (3, 100, 8) and torch.equal(pred.y, pred.steps[:, -1])
    ref = network_loop(batch.x, batch.y, batch.x_query, 100)
    assert (pred.steps - ref).abs().max() < 1e-6
    moved = (pred.steps[:, -1] - pred.steps[:, 0]).abs().max()
    assert moved > 0.1  # training moved the predictions: the comparison is not of two untrained networks


def test_the_network_is_the_same_in_any_batch_and_starts_as_torch_linear() -> None:
    batch = prompts("garg/relu2nn", 10, 4)
    steps = network.train(batch.x, batch.y, batch.x_query, steps=5)
    alone = network.train(batch.x[2:3], batch.y[2:3], batch.x_query[2:3], steps=5)
    assert (alone[0] - steps[2]).abs().max() < 1e-12
    w, w2, b2 = network.initial_weights(20)
    assert w.shape == (21, 100) and w2.shape == (100,) and b2.shape == ()
    assert w.abs().max() <= 1 / 20**0.5 and w2.abs().max() <= 0.1 and w.abs().max() > 0.9 / 20**0.5
    assert abs(float(w.mean())) < 0.01 and float(w.var()) == pytest.approx(1 / 60, rel=0.1)  # uniform: bound^2 / 3


@pytest.mark.parametrize("n", [10, 20])
def test_lasso_on_sparse_linear_is_sklearns_at_the_tuned_penalty(n: int) -> None:
    batch = prompts("garg/sparse-linear", n, 6)
    lam = lasso_lambda(batch.task, n)
    pred = LassoExact().predict(batch)
    for b in range(6):
        # scikit-learn's objective is (1 / 2n) ||y - X b||^2 + alpha ||b||_1: alpha = lambda / n
        ref = Lasso(alpha=lam / n, fit_intercept=False, tol=1e-14, max_iter=10**6)
        ref.fit(batch.x[b].numpy(), batch.y[b].numpy())
        np.testing.assert_allclose(pred.w[b].numpy(), ref.coef_, atol=1e-6)


def test_the_noiseless_penalty_is_tuned_on_its_own_grid() -> None:
    """lasso/* keep their grid and values; garg/sparse-linear's penalty falls with n to the grid's floor, 10^-6, from
    n = d on, where the lasso tends to least squares (exact on noiseless data)."""
    table = tuned_lambdas()["garg/sparse-linear"]
    spec = tasks.get("garg/sparse-linear").spec
    assert set(table) == set(spec.lengths) and tune_lasso.grid(spec) == tune_lasso.NOISELESS_GRID
    assert tune_lasso.NOISELESS_GRID[-len(tune_lasso.GRID) :] == tune_lasso.GRID
    assert all(table[n] == tune_lasso.NOISELESS_GRID[0] == 1e-6 for n in (20, 30, 40))
    assert table[5] > table[10] > table[15] > table[20]
    errors = tune_lasso.grid_errors(tasks.get("garg/sparse-linear"), 5)
    assert tune_lasso.NOISELESS_GRID[int(np.argmin(errors))] == table[5]


def test_supports_on_the_garg_family() -> None:
    chosen = tasks.select(["garg", "linear/kappa1", "kernel/exp"])
    supported = {
        name: {t.spec.name for t in chosen if load_model(name).model.supports(t.spec)}
        for name in ("ols", "ridge", "averaging", "3-nn", "tree", "tree-depth4", "boosting", "relu-nn", "ista",
                     "fista", "lasso-exact", "gd")
    }
    garg = set(GARG)
    for name in ("3-nn", "tree", "tree-depth4", "boosting", "relu-nn"):
        assert supported[name] == garg
    assert supported["ols"] == supported["ridge"] == garg | {"linear/kappa1", "kernel/exp"}
    assert supported["averaging"] == garg | {"linear/kappa1"}
    assert supported["ista"] == supported["fista"] == {"garg/sparse-linear", "linear/kappa1"}
    assert supported["lasso-exact"] == {"garg/sparse-linear"} and not supported["gd"] & garg


@pytest.mark.usefixtures("session_fingerprints")  # evaluation sets from the session's cache folder
@pytest.mark.parametrize("name", ["3-nn", "tree-depth4", "relu-nn", "fista"])
def test_runs_through_the_runner(name: str) -> None:
    config = RunConfig(device="cpu", batch_size=4, prompts=8)
    doc = run(load_model(name), tasks.select(["garg"]), config, progress=False)
    for task, entry in doc["tasks"].items():
        if name == "fista" and task != "garg/sparse-linear":
            assert entry["status"] == "unsupported"
            continue
        assert entry["status"] == "ok", entry.get("error")
        assert set(entry["lengths"]) == {str(n) for n in tasks.get(task).spec.lengths}
        nominal = entry["lengths"][str(tasks.get(task).spec.nominal)]
        assert ("steps_rel_err_db" in nominal) == (name in ("relu-nn", "fista"))
