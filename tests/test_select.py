"""The select family (algorithm selection): its distributions, its reference lines and its tuned fixed ridge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from iclbench import Batch, tasks
from iclbench.baselines import tune_ridge
from iclbench.baselines.oracles import NoiseOracle
from iclbench.baselines.selection import PENALTY_FILE, RidgeFixed, SelectBayes, is_classification
from iclbench.baselines.tuning import best_on_grid
from iclbench.cache import eval_set
from iclbench.solvers import logistic_optimum

NOISE, KINDS = "select/noise-mix", "select/reg-cls"
LEVELS = np.float32([0.1, 0.5, 1.0]).astype(np.float64)


def ridge_loop(x: np.ndarray, y: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Per-prompt ridge by a plain loop over prompts: an independent reference for the batched solvers."""
    return np.stack([np.linalg.solve(xi.T @ xi + li * np.eye(xi.shape[1]), xi.T @ yi) for xi, yi, li in zip(x, y, lam)])


def test_noise_levels_are_drawn_uniformly_from_the_set_and_set_the_label_noise() -> None:
    data, _ = eval_set(tasks.get(NOISE))
    noise = data.hidden["noise"].double().numpy()
    assert set(noise.tolist()) == set(LEVELS.tolist())
    counts = np.array([(noise == s).sum() for s in LEVELS])
    p = len(noise)
    assert np.all(np.abs(counts - p / 3) < 4 * np.sqrt(p * 2 / 9))  # each level a third of the prompts (4 sigma)
    x, y, w = data.x.double(), data.y.double(), data.hidden["w"].double()
    scaled = (w * np.sqrt(20)).flatten()
    assert abs(scaled.mean()) < 0.03 and abs(scaled.std() - 1) < 0.03  # w ~ N(0, I / d), as on the linear tasks
    residual = (y - torch.einsum("bnd,bd->bn", x, w)).numpy()
    for s in LEVELS:  # 80 labels of ~680 prompts per level: the standard deviation within 3 %
        assert residual[noise == s].std() == pytest.approx(s, rel=0.03)
    for n in (5, 40):  # the target is the noiseless label, at every length
        assert torch.allclose(data.targets[n].double(), torch.einsum("bqd,bd->bq", data.x_query.double(), w), atol=1e-5)


def test_kinds_are_mixed_half_and_half_and_told_by_the_labels_alone() -> None:
    data, _ = eval_set(tasks.get(KINDS))
    kind = data.hidden["kind"].numpy()
    p = len(kind)
    assert set(kind.tolist()) == {0.0, 1.0} and abs(kind.sum() - p / 2) < 4 * np.sqrt(p / 4)
    cls = torch.from_numpy(kind == 1)
    x, y, w = data.x.double(), data.y.double(), data.hidden["w"].double()
    assert torch.equal(is_classification(data.y), cls)  # labels in {-1, 1} exactly when the prompt classifies
    assert torch.equal(y[cls], torch.sign(torch.einsum("bnd,bd->bn", x[cls], w[cls])))
    query_signs = torch.sign(torch.einsum("bqd,bd->bq", data.x_query.double()[cls], w[cls]))
    assert torch.equal(data.hidden["y_query"].double()[cls], query_signs)
    scaled = w.flatten()
    assert abs(scaled.mean()) < 0.03 and abs(scaled.std() - 1) < 0.03  # w ~ N(0, I), as on the logistic tasks
    residual = y[~cls] - torch.einsum("bnd,bd->bn", x[~cls], w[~cls])
    assert float(residual.std()) == pytest.approx(1.0, rel=0.02)
    for n in (5, 40):
        target = data.targets[n].double()
        regression = torch.einsum("bqd,bd->bq", data.x_query.double(), w)
        assert torch.allclose(target[~cls], regression[~cls], atol=1e-5)
        few = cls.nonzero()[:32, 0]  # the classification target: the logit of the optimum fitted on the prefix
        w_mu = logistic_optimum(x[few, :n], y[few, :n], 0.01)
        logits = torch.einsum("bqd,bd->bq", data.x_query[few].double(), w_mu)
        assert torch.allclose(target[few], logits, rtol=1e-6, atol=1e-6)


def test_sampled_prompts_are_made_as_the_evaluation_sets() -> None:
    task = tasks.get(KINDS)
    s = task.sample(64, 20, task.train_generator(3), dtype=torch.float64)
    cls = is_classification(s.batch.y)
    assert torch.equal(cls, s.hidden["kind"] == 1) and 0 < int(cls.sum()) < 64
    w_mu = logistic_optimum(s.batch.x[cls], s.batch.y[cls], 0.01)
    assert torch.allclose(s.target[cls], torch.einsum("bqd,bd->bq", s.batch.x_query[cls], w_mu), atol=1e-6)
    assert task.family.classifies(task.spec) and not tasks.get(NOISE).family.classifies(tasks.get(NOISE).spec)
    noisy = tasks.get(NOISE).sample(8, 10, tasks.get(NOISE).train_generator(0))
    assert set(noisy.hidden) == {"w", "noise"}


def pinned(name: str, n: int, prompts: int) -> Batch:
    data, _ = eval_set(tasks.get(name))
    return Batch(tasks.get(name).spec, data.x[:prompts, :n].double(), data.y[:prompts, :n].double(),
                 data.x_query[:prompts].double())


def test_noise_oracle_is_ridge_at_each_prompts_own_penalty() -> None:
    batch = pinned(NOISE, 20, 12)
    data, _ = eval_set(tasks.get(NOISE))
    lam = 20 * data.hidden["noise"][:12].double().numpy() ** 2
    ref = ridge_loop(batch.x.numpy(), batch.y.numpy(), lam)
    pred = NoiseOracle().predict(batch)
    np.testing.assert_allclose(pred.w.numpy(), ref, rtol=1e-10, atol=1e-12)
    expected = np.einsum("bqd,bd->bq", batch.x_query.numpy(), ref)
    np.testing.assert_allclose(pred.y.numpy(), expected, rtol=1e-10, atol=1e-12)
    task = tasks.get(NOISE)
    fresh = task.sample(4, 20, task.train_generator(0), dtype=torch.float64).batch
    with pytest.raises(ValueError, match="noise-oracle: prompt 0 of this batch is not in the pinned evaluation set"):
        NoiseOracle().predict(fresh)


def test_select_bayes_is_the_posterior_mean_over_the_noise_levels() -> None:
    batch = pinned(NOISE, 10, 6)
    x, y = batch.x.numpy(), batch.y.numpy()
    expected = []
    for xi, yi, qi in zip(x, y, batch.x_query.numpy()):  # per prompt: the marginal likelihood of each level, directly
        loglik = np.array([multivariate_normal(np.zeros(10), xi @ xi.T / 20 + s * s * np.eye(10)).logpdf(yi)
                           for s in LEVELS])
        post = np.exp(loglik - loglik.max())
        post /= post.sum()
        fits = [np.linalg.solve(xi.T @ xi + 20 * s * s * np.eye(20), xi.T @ yi) for s in LEVELS]
        expected.append(qi @ sum(p * f for p, f in zip(post, fits)))
    np.testing.assert_allclose(SelectBayes().predict(batch).y.numpy(), np.stack(expected), rtol=1e-9, atol=1e-12)


def test_select_bayes_runs_ridge_or_the_logistic_optimum_by_the_labels() -> None:
    batch = pinned(KINDS, 20, 16)
    data, _ = eval_set(tasks.get(KINDS))
    cls = data.hidden["kind"][:16].numpy() == 1
    pred = SelectBayes().predict(batch).y.numpy()
    ridge = ridge_loop(batch.x.numpy()[~cls], batch.y.numpy()[~cls], np.ones((~cls).sum()))  # penalty noise^2 = 1
    np.testing.assert_allclose(pred[~cls], np.einsum("bqd,bd->bq", batch.x_query.numpy()[~cls], ridge), rtol=1e-10)
    np.testing.assert_allclose(pred[cls], data.targets[20][:16].numpy()[cls], rtol=1e-5, atol=1e-5)  # the target


def test_ridge_fixed_uses_its_tuned_penalty_for_every_prompt() -> None:
    stored = json.loads(PENALTY_FILE.read_text())
    assert stored["procedure"] == "python -m iclbench.baselines.tune_ridge" and stored["grid"] == list(tune_ridge.GRID)
    assert set(stored["lambda"]) == {NOISE, KINDS}
    for name, by_length in stored["lambda"].items():
        assert set(by_length) == {str(n) for n in tasks.get(name).spec.lengths}
        assert all(lam in tune_ridge.GRID[:-1] for lam in by_length.values())
    batch = pinned(NOISE, 40, 8)
    lam = stored["lambda"][NOISE]["40"]
    ref = ridge_loop(batch.x.numpy(), batch.y.numpy(), np.full(8, lam))
    np.testing.assert_allclose(RidgeFixed().predict(batch).w.numpy(), ref, rtol=1e-10, atol=1e-12)
    assert not RidgeFixed().supports_length(batch.task, 7)


def test_tuning_criterion_prefers_the_stored_penalty() -> None:
    """The stored penalty of select/reg-cls at n = 5 minimises the tuning criterion over the grid."""
    errors = tune_ridge.grid_errors(tasks.get(KINDS), 5)
    assert tune_ridge.GRID[int(np.argmin(errors))] == RidgeFixed().penalties[KINDS][5]


def test_a_best_penalty_at_the_edge_of_the_grid_is_refused(capsys) -> None:
    grid = (0.0, 0.1, 1.0, 10.0)
    assert best_on_grid("t", 5, grid, [0.1, 0.2, 0.3, 0.4], lowest_is_a_limit=True) == 0.0
    assert capsys.readouterr().out == "t n=5: 0 (relative query error 0.1)\n"
    for errors, limit in (([0.4, 0.3, 0.2, 0.1], True), ([0.1, 0.2, 0.3, 0.4], False)):
        with pytest.raises(RuntimeError, match="t n=5: the best value .* is at the edge of the grid"):
            best_on_grid("t", 5, grid, errors, lowest_is_a_limit=limit)
