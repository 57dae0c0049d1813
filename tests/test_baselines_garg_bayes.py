"""The garg family's exact references: `garg-bayes` (sparse-linear, decision-tree, quadratic) and `gp-posterior` on
garg/relu2nn, each against an independent reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from iclbench import Batch, tasks
from iclbench.baselines.garg_bayes import SPARSE_JITTER, GargBayes, sparse_posterior_mean, tree_posterior_mean
from iclbench.baselines.oracles import GPPosterior
from iclbench.kernels import gram
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.tasks.garg import relu_network, tree_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def prompts(name: str, n: int, batch: int, seed: int = 0) -> Batch:
    task = tasks.get(name)
    return task.sample(batch, n, task.train_generator(seed), dtype=torch.float64).batch


def every_tree(x: np.ndarray, y: np.ndarray, x_query: np.ndarray, depth: int) -> np.ndarray:
    """The posterior mean (q,) of one prompt by enumeration: every tree of `depth` levels on x's d coordinates is
    kept when two prompt points share a leaf exactly when their labels are equal, and the query's prediction is
    the mean over the kept trees of the label in its leaf (0 where its leaf holds no prompt point)."""
    d = x.shape[-1]
    coords = np.array(list(itertools.product(range(d), repeat=2**depth - 1)))  # (T, 2^depth - 1)
    ids = np.broadcast_to(np.arange(2**depth, dtype=float), (len(coords), 2**depth))
    leaf = tree_labels(np.broadcast_to(x, (len(coords), *x.shape)), coords, ids).astype(int)  # (T, n)
    leaf_q = tree_labels(np.broadcast_to(x_query, (len(coords), *x_query.shape)), coords, ids).astype(int)
    together = leaf[:, :, None] == leaf[:, None, :]
    kept = (together == (y[:, None] == y[None, :])).all((1, 2))
    assert kept.any(), "the test's prompts come from a tree"
    hit = leaf_q[kept][:, :, None] == leaf[kept][:, None, :]  # (T', q, n)
    label = np.where(hit.any(-1), (hit * y).sum(-1) / np.maximum(hit.sum(-1), 1), 0.0)
    return label.mean(0)


@pytest.mark.parametrize("d, depth, n", [(5, 2, 6), (3, 3, 5), (4, 3, 12), (2, 4, 7)])
def test_the_tree_posterior_is_the_mean_over_every_consistent_tree(d: int, depth: int, n: int) -> None:
    rng = np.random.default_rng(d * 100 + depth * 10 + n)
    batch = 3
    coords = rng.integers(0, d, size=(batch, 2**depth - 1))
    leaves = rng.standard_normal((batch, 2**depth))
    x, x_query = rng.standard_normal((batch, n, d)), rng.standard_normal((batch, 5, d))
    y = tree_labels(x, coords, leaves)
    got = tree_posterior_mean(*(torch.from_numpy(t) for t in (x, y, x_query)), depth, chunk=2)
    want = np.stack([every_tree(x[b], y[b], x_query[b], depth) for b in range(batch)])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    assert (want != 0).any() and not np.allclose(want, want[:, :1])  # queries that tell trees apart


def test_labels_no_tree_explains_are_predicted_zero() -> None:
    rng = np.random.default_rng(1)
    x, x_query = torch.from_numpy(rng.standard_normal((2, 6, 3))), torch.from_numpy(rng.standard_normal((2, 4, 3)))
    y = torch.from_numpy(rng.standard_normal((2, 6)))  # six distinct labels for four leaves
    y[1, :4] = y[1, 4]  # and, in the second prompt, equal labels on opposite sides of every coordinate
    x[1, 0], x[1, 1] = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([-1.0, -1.0, -1.0])
    assert tree_posterior_mean(x, y, x_query, 2).tolist() == [[0.0] * 4] * 2


def test_at_full_size_a_query_at_a_prompt_point_gets_its_label() -> None:
    """Every consistent tree puts a prompt point in its own group's leaf (d = 20, depth 4: 20^15 trees)."""
    batch = prompts("garg/decision-tree", 100, 6)
    pred = tree_posterior_mean(batch.x, batch.y, batch.x[:, :8], 4)
    torch.testing.assert_close(pred, batch.y[:, :8], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [2, 3])
def test_the_sparse_posterior_is_the_mixture_over_every_support(n: int) -> None:
    """With n <= k every support explains the labels: each support weighs N(y; 0, X_S X_S^T + e I) and predicts
    with its posterior mean X_S^T (X_S X_S^T + e I)^-1 y (e the documented jitter), per prompt, in the n x n
    form, by SciPy's density."""
    rng = np.random.default_rng(2)
    d, k = 6, 3
    x, x_query = rng.standard_normal((4, n, d)), rng.standard_normal((4, 3, d))
    y = rng.standard_normal((4, n))
    got = sparse_posterior_mean(*(torch.from_numpy(t) for t in (x, y, x_query)), k).numpy()
    for b in range(4):
        cov_noise = SPARSE_JITTER * np.mean(y[b] ** 2) * np.eye(n)
        logs, means = [], []
        for support in itertools.combinations(range(d), k):
            xs = x[b][:, support]
            logs.append(multivariate_normal(np.zeros(n), xs @ xs.T + cov_noise).logpdf(y[b]))
            w = np.zeros(d)
            w[list(support)] = xs.T @ np.linalg.solve(xs @ xs.T + cov_noise, y[b])
            means.append(x_query[b] @ w)
        weights = np.exp(np.array(logs) - max(logs))
        np.testing.assert_allclose(got[b], weights @ np.array(means) / weights.sum(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, n", [("garg/sparse-linear", 5), ("garg/quadratic", 30)])
def test_past_the_identifiable_length_the_prediction_is_exact(name: str, n: int) -> None:
    """From n = k + 1 (sparse-linear) or n = d (quadratic) on, one function explains the noiseless labels: the
    prediction is the target up to the labels' float32 rounding (a wrong support or fit errs by about 1)."""
    task = tasks.get(name)
    sample = task.sample(16, n, task.train_generator(3), dtype=torch.float64)
    pred = GargBayes().predict(sample.batch)
    torch.testing.assert_close(pred, sample.target, rtol=0, atol=1e-5)


def test_the_quadratic_posterior_is_the_minimum_norm_interpolant_on_squared_inputs() -> None:
    batch = prompts("garg/quadratic", 10, 4)
    pred = GargBayes().predict(batch)
    for b in range(4):
        phi, phi_q = batch.x[b].numpy() ** 2 / math.sqrt(3), batch.x_query[b].numpy() ** 2 / math.sqrt(3)
        np.testing.assert_allclose(pred[b].numpy(), phi_q @ np.linalg.pinv(phi) @ batch.y[b].numpy(), rtol=1e-9)


def test_the_relu_kernel_is_the_networks_covariance() -> None:
    """gp-posterior's kernel on garg/relu2nn: E[f(x) f(x')] over the task's networks (100 hidden units), by
    Monte Carlo over 4,000 networks, equals gram(x, x', "relu") within five standard errors."""
    rng = np.random.default_rng(4)
    points = rng.standard_normal((1, 4, 20))
    nets = 4000
    f = relu_network(np.broadcast_to(points, (nets, 4, 20)), rng.standard_normal((nets, 20, 100)),
                     rng.standard_normal((nets, 100)))  # (nets, 4)
    moments = f[:, :, None] * f[:, None, :]
    kernel = gram(torch.from_numpy(points[0]), torch.from_numpy(points[0]), "relu").numpy()
    assert np.all(np.abs(moments.mean(0) - kernel) < 5 * moments.std(0) / math.sqrt(nets))


@pytest.mark.usefixtures("session_fingerprints")  # evaluation sets from the session's cache folder
def test_supports_and_runs_through_the_runner() -> None:
    garg = {name for name, t in tasks.TASKS.items() if t.spec.family == "garg"}
    assert {t for t in tasks.TASKS if GargBayes().supports(tasks.get(t).spec)} == garg - {"garg/relu2nn"}
    assert {t for t in garg if GPPosterior().supports(tasks.get(t).spec)} == {"garg/relu2nn"}
    doc = run(load_model("garg-bayes"), tasks.select(["garg"]), RunConfig(device="cpu", batch_size=4, prompts=8),
              progress=False)
    assert doc["tasks"]["garg/relu2nn"]["status"] == "unsupported"
    for name in garg - {"garg/relu2nn"}:
        entry = doc["tasks"][name]
        assert entry["status"] == "ok", entry.get("error")
        assert set(entry["lengths"]) == {str(n) for n in tasks.get(name).spec.lengths}
