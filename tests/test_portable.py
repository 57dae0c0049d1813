"""The portable arithmetic of data generation, against NumPy, LAPACK, libm and torch references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iclbench.kernels import gram as torch_gram
from iclbench.solvers import logistic_optimum
from iclbench.tasks import ar, kernel, logistic, portable



def ulps(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want) / np.spacing(np.abs(want))))


def test_exp_is_within_two_ulps_of_libm_over_its_range() -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-700, 700, 20000), rng.uniform(-1, 1, 20000), [0.0, -0.5, 1e-300, 709.0, -700.0]])
    assert ulps(portable.exp(x), np.array([math.exp(v) for v in x])) <= 2


def test_arccos_is_within_a_few_ulps_of_libm_on_minus_one_to_one() -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-1, 1, 40000), [-1.0, -0.5, 0.0, 0.5, 1.0, np.nextafter(0.5, 1), -1 + 1e-12]])
    want = np.array([math.acos(v) for v in x])
    got = portable.arccos(x)
    assert float(np.max(np.abs(got - want))) <= 4 * np.spacing(np.pi)
    assert got[x == 1.0][0] == 0.0 and got[x == -1.0][0] == np.pi


def test_sums_and_products_match_blas() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((6, 7, 20)), rng.standard_normal((6, 20, 5))
    np.testing.assert_allclose(portable.matmul(a, b), a @ b, rtol=0, atol=1e-13)
    np.testing.assert_allclose(portable.dot(a, a), np.einsum("bnd,bnd->bn", a, a), rtol=1e-14)


def test_cholesky_and_solve_match_lapack() -> None:
    rng = np.random.default_rng(7)
    g = rng.standard_normal((16, 12, 12))
    a = g @ g.transpose(0, 2, 1) + 0.1 * np.eye(12)
    b = rng.standard_normal((16, 12))
    np.testing.assert_allclose(portable.cholesky(a), np.linalg.cholesky(a), rtol=0, atol=1e-12)
    want = np.linalg.solve(a, b[..., None])[..., 0]
    np.testing.assert_allclose(portable.solve_spd(a, b), want, rtol=0, atol=1e-10 * np.abs(want).max())
    with pytest.raises(ValueError, match="not positive definite"):
        portable.cholesky(-a)


def test_haar_is_the_q_factor_with_positive_diagonal_r() -> None:
    rng = np.random.default_rng(7)
    g = rng.standard_normal((64, 20, 20))
    q = portable.haar(g)
    np.testing.assert_allclose(q.transpose(0, 2, 1) @ q, np.broadcast_to(np.eye(20), q.shape), atol=1e-14)
    r = q.transpose(0, 2, 1) @ g
    assert np.all(np.diagonal(r, axis1=1, axis2=2) > 0)
    np.testing.assert_allclose(np.tril(r, -1), 0, atol=1e-12)
    lq, lr = np.linalg.qr(g)
    np.testing.assert_allclose(q, lq * np.sign(np.diagonal(lr, axis1=1, axis2=2))[:, None, :], atol=1e-12)


def test_results_do_not_depend_on_the_batch_they_are_computed_in() -> None:
    rng = np.random.default_rng(7)
    g = rng.standard_normal((32, 10, 10))
    whole = portable.haar(g), portable.cholesky(g @ g.transpose(0, 2, 1) + np.eye(10)), portable.exp(g)
    one = portable.haar(g[5:6]), portable.cholesky(g[5:6] @ g[5:6].transpose(0, 2, 1) + np.eye(10)), portable.exp(g[5:6])
    for a, b in zip(whole, one):
        assert np.array_equal(a[5:6], b)


@pytest.mark.parametrize("kind", ["exp", "relu"])
def test_generation_gram_matches_the_baselines_kernels(kind: str) -> None:
    rng = np.random.default_rng(7)
    z = rng.standard_normal((8, 30, 5))
    pts = z / np.linalg.norm(z, axis=-1, keepdims=True)
    want = torch_gram(torch.from_numpy(pts), torch.from_numpy(pts), kind).numpy()
    np.testing.assert_allclose(kernel.gram(pts, kind), want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("n", [5, 20, 80])
def test_logistic_target_is_the_regularised_optimum(n: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, n, 10))
    y = np.sign(x @ rng.standard_normal((64, 10, 1)))[..., 0]
    w = logistic.optimum(x, y, 0.01)
    want = logistic_optimum(torch.from_numpy(x), torch.from_numpy(y), 0.01).numpy()
    np.testing.assert_allclose(w, want, rtol=0, atol=1e-10 * np.abs(want).max())
    grad, _ = logistic._gradient(x, y, w, 0.01)
    assert np.abs(grad).max() < 1e-14


def test_ar_transition_matches_blas_and_the_uniform_token_is_exact() -> None:
    rng = np.random.default_rng(7)
    w, x = portable.haar(rng.standard_normal((64, 10, 10))), rng.standard_normal((64, 10))
    np.testing.assert_allclose(ar.transition(w, x), np.einsum("bij,bj->bi", w, x), rtol=0, atol=1e-14)
    token = ar.initial_token(np.random.default_rng(3), "uniform", 64, 10)
    u = np.random.default_rng(3).random((64, 10))  # 2u - 1 is exact: no rounding left to a libm or an FMA
    assert np.array_equal(token, (2 * u - 1).astype(np.float32).astype(np.float64))
    assert np.array_equal(((2 * u - 1) + 1) / 2, u)
    with pytest.raises(ValueError, match="unknown initial token 'laplace'"):
        ar.initial_token(rng, "laplace", 1, 10)
