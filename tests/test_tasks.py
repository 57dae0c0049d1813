"""Each task family's samples match its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iclbench import tasks
from iclbench.cache import eval_set
from iclbench.kernels import gram
from iclbench.solvers import logistic_optimum
from iclbench.tasks import ar


def sampled(name: str, batch: int, n: int, seed: int = 0):
    task = tasks.get(name)
    return task.sample(batch, n, task.train_generator(seed), dtype=torch.float64)


@pytest.mark.parametrize("name, kappa", [("linear/kappa1", 1), ("linear/kappa10", 10), ("linear/kappa100", 100)])
def test_linear_covariance_has_the_stated_condition_number(name: str, kappa: float) -> None:
    s = sampled(name, 4, 40000)
    x = s.batch.x
    cov = x.mT @ x / x.shape[1]
    eig = torch.linalg.eigvalsh(cov)
    measured = eig[:, -1] / eig[:, 0]
    assert torch.allclose(measured, torch.full_like(measured, float(kappa)), rtol=0.1)
    assert torch.allclose(torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1), torch.full((4,), 20.0, dtype=cov.dtype), rtol=0.03)
    # the hidden Sigma is the population covariance the samples were drawn from
    assert torch.allclose(cov, s.hidden["sigma"], atol=0.05 * math.sqrt(kappa))


def test_linear_covariance_eigenvectors_differ_per_prompt() -> None:
    sigma = sampled("linear/kappa100", 3, 5).hidden["sigma"]
    top = torch.linalg.eigh(sigma).eigenvectors[..., -1]
    assert (top[0] @ top[1]).abs() < 0.9 and (top[0] @ top[2]).abs() < 0.9


def test_linear_labels_follow_the_model() -> None:
    s = sampled("linear/kappa1", 512, 40)
    w = s.hidden["w"]
    scaled = (w * math.sqrt(20)).flatten()
    assert abs(scaled.mean()) < 0.03 and abs(scaled.std() - 1) < 0.03
    y = torch.einsum("bnd,bd->bn", s.batch.x, w)
    assert torch.allclose(s.batch.y, y, atol=1e-5)  # noiseless up to float32 rounding
    assert torch.allclose(s.target, torch.einsum("bqd,bd->bq", s.batch.x_query, w), atol=1e-5)


def test_noisy_linear_noise_has_the_stated_scale() -> None:
    s = sampled("linear/noisy", 512, 80)
    residual = s.batch.y - torch.einsum("bnd,bd->bn", s.batch.x, s.hidden["w"])
    assert abs(residual.std() - 0.5) < 0.01 and abs(residual.mean()) < 0.01
    assert abs((s.y_query - s.target).std() - 0.5) < 0.03


@pytest.mark.parametrize("name", ["logistic/kappa1", "logistic/kappa10"])
def test_logistic_labels_and_targets(name: str) -> None:
    data, _ = eval_set(tasks.get(name))
    assert set(data.y.unique().tolist()) == {-1.0, 1.0}
    w = data.hidden["w"].double()
    for labels, x in ((data.y, data.x), (data.hidden["y_query"], data.x_query)):
        dots = torch.einsum("bnd,bd->bn", x.double(), w)
        # far from 0 next to float64 round-off, so the sign cannot depend on the order the products are summed in
        assert dots.abs().min() > 1e-9
        assert torch.equal(labels.double(), torch.sign(dots))
    # the target at length n is the logit of the optimum fitted on that prefix alone
    for n in (5, 40):
        x, y = data.x[:64, :n].double(), data.y[:64, :n].double()
        w_mu = logistic_optimum(x, y, 0.01)
        logits = torch.einsum("bqd,bd->bq", data.x_query[:64].double(), w_mu)
        assert torch.allclose(data.targets[n][:64].double(), logits, rtol=1e-6, atol=1e-6)


def test_logistic_optimum_zeroes_the_gradient() -> None:
    s = sampled("logistic/kappa10", 64, 20)
    x, y = s.batch.x.numpy(), s.batch.y.numpy()
    w = logistic_optimum(s.batch.x, s.batch.y, 0.01).numpy()
    for xi, yi, wi in zip(x, y, w):  # plain loop: an independent check of the batched solver
        m = yi * (xi @ wi)
        grad = -(xi.T @ (yi / (1 + np.exp(m)))) / len(yi) + 0.01 * wi
        assert np.abs(grad).max() < 1e-10


def test_lasso_codes_are_exactly_sparse_and_gaussian() -> None:
    data, _ = eval_set(tasks.get("lasso/fixed"))
    beta = data.hidden["w"]
    assert ((beta != 0).sum(-1) == 3).all()
    nonzero = beta[beta != 0].double()
    assert abs(nonzero.mean()) < 0.05 and abs(nonzero.std() - 1) < 0.05
    support_counts = (beta != 0).sum(0).double()
    assert support_counts.min() > 0.6 * support_counts.mean()  # supports spread over all coordinates


def test_lasso_fixed_uses_the_published_matrix() -> None:
    task = tasks.get("lasso/fixed")
    data, _ = eval_set(task)
    x0 = task.public["X0"].float()
    assert torch.equal(data.public["X0"], x0)
    assert torch.equal(data.x, x0.expand_as(data.x))
    assert abs(x0.mean()) < 0.15 and abs(x0.std() - 1) < 0.15
    noise = data.y.double() - torch.einsum("bnd,bd->bn", data.x.double(), data.hidden["w"].double())
    assert abs(noise.std() - 0.05) < 0.002


@pytest.mark.parametrize("name, s", [("lasso/shift0.1", 0.1), ("lasso/shift0.5", 0.5)])
def test_lasso_shifted_matrices_are_at_the_stated_distance(name: str, s: float) -> None:
    task = tasks.get(name)
    data, _ = eval_set(task)
    x0 = task.public["X0"].double()
    x = data.x.double()
    g = (x * math.sqrt(1 + s * s) - x0) / s  # the fresh Gaussian part of each prompt's matrix
    assert abs(g.mean()) < 0.01 and abs(g.std() - 1) < 0.01
    assert abs(float((g * x0).mean())) < 0.01  # independent of X0
    c = 1 / math.sqrt(1 + s * s)
    expected = (1 - c) ** 2 * float((x0**2).mean()) + (s * c) ** 2
    assert float(((x - x0) ** 2).mean()) == pytest.approx(expected, rel=0.02)
    assert abs(x.std() - 1) < 0.15  # rows stay N(0, I)


def test_lasso_random_matrices_are_fresh_gaussians() -> None:
    task = tasks.get("lasso/random")
    data, _ = eval_set(task)
    x = data.x.double()
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert abs(float((x * task.public["X0"].double()).mean())) < 0.01


@pytest.mark.usefixtures("session_fingerprints")  # kernel/relu from the cache folder, not generated in this process
@pytest.mark.parametrize("kernel", ["linear", "exp", "relu"])
def test_kernel_labels_have_the_gp_covariance(kernel: str) -> None:
    data, _ = eval_set(tasks.get(f"kernel/{kernel}"))
    x = torch.cat([data.x, data.x_query], 1).double()
    y = torch.cat([data.y, data.hidden["y_query"]], 1).double()
    assert torch.allclose(x.norm(dim=-1), torch.ones(x.shape[:2], dtype=x.dtype), atol=1e-6)
    flat = x.reshape(-1, 5)
    assert flat.mean(0).abs().max() < 0.02
    assert torch.allclose(flat.T @ flat / len(flat), torch.eye(5, dtype=x.dtype) / 5, atol=0.01)
    k = gram(x, x, kernel)
    products = y.unsqueeze(-1) * y.unsqueeze(-2)  # E[y_i y_j | x] = K(x_i, x_j)
    off = ~torch.eye(x.shape[1], dtype=torch.bool)
    slope = float((products[:, off] * k[:, off]).sum() / (k[:, off] ** 2).sum())
    assert slope == pytest.approx(1.0, abs=0.05)
    diag = torch.diagonal(products, dim1=-2, dim2=-1).mean()
    assert float(diag) == pytest.approx(float(torch.diagonal(k, dim1=-2, dim2=-1).mean()), rel=0.03)


def test_relu_kernel_is_twice_the_expected_relu_product() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, dtype=torch.float64, generator=gen)
    g = torch.randn(400000, 3, dtype=torch.float64, generator=gen)
    mc = 2 * (torch.relu(g @ a) * torch.relu(g @ b)).mean()
    assert float(gram(a[None], b[None], "relu")) == pytest.approx(float(mc), rel=0.02)


def test_prompts_are_nested_prefixes_and_sampler_streams_are_disjoint() -> None:
    task = tasks.get("linear/kappa10")
    data, _ = eval_set(task)
    for n in task.spec.lengths[1:]:
        assert torch.equal(data.targets[n], data.targets[task.spec.lengths[0]])  # the same queries at every length
    a = task.sample(8, 80, task.train_generator(0))
    b = task.sample(8, 80, task.train_generator(0))
    c = task.sample(8, 80, task.train_generator(1))
    assert torch.equal(a.batch.x, b.batch.x) and not torch.equal(a.batch.x, c.batch.x)
    # no training point is an evaluation point, even rounded to float32 (rows compared as bytes, in sets)
    eval_rows = {row.tobytes() for row in data.x.reshape(-1, 20).float().numpy()}
    train_rows = {row.tobytes() for row in a.batch.x.reshape(-1, 20).float().numpy()}
    assert len(train_rows) == 8 * 80 and not eval_rows & train_rows


def test_sampled_targets_match_the_evaluation_construction() -> None:
    task = tasks.get("logistic/kappa1")
    s = task.sample(16, 20, task.train_generator(3), dtype=torch.float64)
    w_mu = logistic_optimum(s.batch.x, s.batch.y, 0.01)
    assert torch.allclose(s.target, torch.einsum("bqd,bd->bq", s.batch.x_query, w_mu), atol=1e-6)


def test_unknown_task_names_are_reported() -> None:
    with pytest.raises(tasks.UnknownTaskError, match="unknown task 'linear/kappa2'"):
        tasks.get("linear/kappa2")
    with pytest.raises(tasks.UnknownTaskError, match="no task matches 'nope'"):
        tasks.select(["nope"])
    assert [t.spec.name for t in tasks.select(["lasso/shift*", "kernel/exp"])] == [
        "lasso/shift0.1",
        "lasso/shift0.5",
        "kernel/exp",
    ]


AR_TASKS = ("ar/uniform", "ar/gaussian", "ar/noisy")


@pytest.mark.parametrize("name", AR_TASKS)
def test_ar_transition_matrices_are_haar_orthogonal(name: str) -> None:
    data, _ = eval_set(tasks.get(name))
    w = data.hidden["w"].double()
    eye = torch.eye(10, dtype=w.dtype).expand_as(w)
    assert (w.mT @ w - eye).abs().max() < 1e-6  # orthogonal to float32 round-off
    # Haar on O(10): E tr W = 0, E tr(W)^2 = 1, E W_ij^2 = 1/d, det = +1 or -1 with probability 1/2
    trace = torch.diagonal(w, dim1=-2, dim2=-1).sum(-1)
    assert abs(float(trace.mean())) < 0.07 and float((trace**2).mean()) == pytest.approx(1.0, abs=0.1)
    assert float((w**2).mean()) == pytest.approx(0.1, rel=1e-6)
    assert float((torch.linalg.det(w) > 0).double().mean()) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("name", AR_TASKS)
def test_ar_states_follow_the_recurrence(name: str) -> None:
    task = tasks.get(name)
    data, _ = eval_set(task)
    x, y, w = data.x.double(), data.y.double(), data.hidden["w"].double()
    assert torch.equal(y[:, :-1], x[:, 1:])  # a pair's label is the next pair's input
    assert torch.equal(data.x_query[:, 0], data.y[:, -1])  # the query is the state after the last pair
    assert data.y.shape == (2048, 50, 10) and data.x_query.shape == (2048, 1, 10) and w.shape == (2048, 10, 10)
    pred = torch.einsum("bij,bnj->bni", w, x)  # W x_t in float64, summed in BLAS's order
    query = torch.einsum("bij,bqj->bqi", w, data.x_query.double())
    for n in task.spec.lengths:  # one target, W x_{N+1}, at every length
        assert torch.equal(data.targets[n], data.targets[50])
    assert ((data.targets[50].double() - query).abs() <= 2**-24 * query.abs() + 1e-15).all()
    if task.spec.noise == 0:  # every state is W times the previous one, rounded to float32
        assert ((y - pred).abs() <= 2**-24 * pred.abs() + 1e-15).all()  # within float32 rounding of BLAS's W x_t
        exact = ar.transition(w[:64].numpy(), x[:64, 7].numpy())  # the definition's order of summation
        assert np.array_equal(y[:64, 7].numpy(), exact.astype(np.float32).astype(np.float64))
        assert torch.equal(data.hidden["y_query"], data.targets[50])
        norms = torch.cat([x, data.x_query.double()], 1).norm(dim=-1)
        assert (norms - norms[:, :1]).abs().max() < 1e-5  # W orthogonal: every state keeps x_1's norm
    else:
        for residual in (y - pred, data.hidden["y_query"].double() - query):
            assert abs(float(residual.mean())) < 0.0005 and float(residual.std()) == pytest.approx(0.01, rel=0.02)


def test_ar_initial_token_has_the_stated_law() -> None:
    uniform = eval_set(tasks.get("ar/uniform"))[0].x[:, 0].double().flatten()
    assert uniform.min() >= -1 and uniform.max() < 1
    counts = torch.histc(uniform, bins=10, min=-1, max=1)  # U(-1, 1): each tenth holds a tenth
    assert (counts / len(uniform) - 0.1).abs().max() < 0.01
    gauss = eval_set(tasks.get("ar/gaussian"))[0].x[:, 0].double().flatten()
    assert abs(float(gauss.mean())) < 0.03 and float(gauss.var()) == pytest.approx(1.0, abs=0.04)
    assert float((gauss**4).mean()) == pytest.approx(3.0, abs=0.2)  # N(0, 1)'s fourth moment; U(-1, 1) has 1/5
    coords = eval_set(tasks.get("ar/gaussian"))[0].x[:, 0].double()
    assert (coords.T @ coords / len(coords) - torch.eye(10, dtype=coords.dtype)).abs().max() < 0.1  # N(0, I_d)


def test_ar_samples_are_sequences_and_streams_are_disjoint() -> None:
    task = tasks.get("ar/noisy")
    data, _ = eval_set(task)
    a = task.sample(64, 20, task.train_generator(0), dtype=torch.float64)
    b = task.sample(64, 20, task.train_generator(0), dtype=torch.float64)
    c = task.sample(64, 20, task.train_generator(1), dtype=torch.float64)
    assert torch.equal(a.batch.x, b.batch.x) and not torch.equal(a.batch.x, c.batch.x)
    assert a.batch.y.shape == (64, 20, 10) and a.batch.x_query.shape == (64, 1, 10) and a.y_query.shape == (64, 1, 10)
    assert torch.equal(a.batch.y[:, :-1], a.batch.x[:, 1:]) and torch.equal(a.batch.x_query[:, 0], a.batch.y[:, -1])
    w = a.hidden["w"]
    assert torch.allclose(a.target, torch.einsum("bij,bqj->bqi", w, a.batch.x_query), atol=1e-6)
    eval_rows = {row.tobytes() for row in data.x.reshape(-1, 10).float().numpy()}
    train_rows = {row.tobytes() for row in a.batch.x.reshape(-1, 10).float().numpy()}
    assert len(train_rows) == 64 * 20 and not eval_rows & train_rows


def test_ar_prompts_have_one_query() -> None:
    task = tasks.get("ar/uniform")
    assert task.sample(4, 10, task.train_generator(0)).batch.x_query.shape == (4, 1, 10)
    with pytest.raises(ValueError, match=r"ar/uniform: a prompt has one query, .*got n_queries=8"):
        task.sample(4, 10, task.train_generator(0), n_queries=8)


@pytest.mark.parametrize("name", ["linear/kappa10", "logistic/kappa1"])
def test_a_smaller_dimension_is_the_family_in_a_subspace(name: str) -> None:
    """`sample(dims=k)`: the family's prompts at dimension k, zero-padded to d (the dimension curriculum)."""
    task = tasks.get(name)
    d, k = task.spec.d, 7
    s = task.sample(64, 30, task.train_generator(5), dtype=torch.float64, dims=k)
    small = tasks.get(name).in_dimension(k)
    ref = task.family.draw(small, task.train_generator(5), 64, 30, task.spec.n_queries)  # the same stream at d = k
    assert s.batch.x.shape == (64, 30, d) and s.batch.x_query.shape == (64, task.spec.n_queries, d)
    assert torch.equal(s.batch.x[..., :k], torch.from_numpy(ref.x)) and not s.batch.x[..., k:].any()
    assert not s.batch.x_query[..., k:].any() and torch.equal(s.batch.y, torch.from_numpy(ref.y))
    assert s.hidden["w"].shape == (64, d) and not s.hidden["w"][:, k:].any()
    assert s.hidden["sigma"].shape == (64, d, d) and not s.hidden["sigma"][:, k:].any()
    assert not s.hidden["sigma"][:, :, k:].any()
    if name.startswith("linear"):  # labels of the padded inputs and weights, unit variance as at d
        assert torch.allclose(s.batch.y, torch.einsum("bnd,bd->bn", s.batch.x, s.hidden["w"]), atol=1e-5)
        assert torch.allclose(s.target, torch.einsum("bqd,bd->bq", s.batch.x_query, s.hidden["w"]), atol=1e-5)
        assert float(s.batch.y.var()) == pytest.approx(1.0, rel=0.15)
        eig = torch.linalg.eigvalsh(s.hidden["sigma"][:, :k, :k])
        assert torch.allclose(eig[:, -1] / eig[:, 0], torch.full((64,), 10.0, dtype=eig.dtype), rtol=1e-6)
    else:  # the target is the optimum on the padded prompt
        w_mu = logistic_optimum(s.batch.x, s.batch.y, task.spec.params["mu"])
        assert w_mu[:, k:].abs().max() <= 1e-12
        assert torch.allclose(s.target, torch.einsum("bqd,bd->bq", s.batch.x_query, w_mu), atol=1e-6)
    full = task.sample(8, 30, task.train_generator(5), dims=d)
    assert torch.equal(full.batch.x, task.sample(8, 30, task.train_generator(5)).batch.x)  # dims = d: the task


def test_kernel_points_in_fewer_dimensions_lie_on_a_smaller_sphere() -> None:
    task = tasks.get("kernel/exp")
    s = task.sample(16, 10, task.train_generator(0), dtype=torch.float64, dims=3)
    x = torch.cat([s.batch.x, s.batch.x_query], 1)
    assert not x[..., 3:].any() and torch.allclose(x.norm(dim=-1), torch.ones(x.shape[:2], dtype=x.dtype))


def test_families_without_smaller_dimensions_refuse_them() -> None:
    for name in ("lasso/fixed", "ar/uniform"):
        task = tasks.get(name)
        with pytest.raises(ValueError, match=f"{name}: the .* family has no draws in fewer dimensions"):
            task.sample(4, 10, task.train_generator(0), dims=3)
        assert task.sample(4, 10, task.train_generator(0), dims=task.spec.d).batch.x.shape[-1] == task.spec.d
    for dims in (1, 21):
        with pytest.raises(ValueError, match=f"linear/kappa10: a dimension from 2 to 20, got {dims}"):
            tasks.get("linear/kappa10").in_dimension(dims)
