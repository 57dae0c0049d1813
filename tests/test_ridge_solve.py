"""`ridge.solve`, the exact ridge and least-squares solver, against NumPy prompt by prompt: the (semi-)normal
equations where they are accurate, the QR solve where they are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iclbench.baselines import ridge


def reference(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """One prompt's ridge solution (minimum-norm least squares at lam = 0) by NumPy's SVD-based lstsq."""
    d = x.shape[1]
    if lam > 0:
        x, y = np.vstack([x, np.sqrt(lam) * np.eye(d)]), np.concatenate([y, np.zeros((d, *y.shape[1:]))])
    return np.linalg.lstsq(x, y, rcond=None)[0]


@pytest.mark.parametrize("n", [3, 10])
def test_the_qr_solve_of_a_rank_deficient_batch_is_the_minimum_norm_solution(n: int) -> None:
    """Prompts whose inputs span 5 of 20 coordinates (zero-padded, as `Task.sample(dims=5)` draws them), 256 at
    once: every call gives the pseudo-inverse's answer (LAPACK's gelsy gave other solutions, varying between
    calls, on such batches)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.zeros(256, n, 20, dtype=torch.float64)
    x[..., :5] = torch.randn(256, n, 5, generator=gen, dtype=torch.float64)
    rhs = torch.randn(256, n, 1, generator=gen, dtype=torch.float64)
    want = torch.linalg.pinv(x) @ rhs
    for _ in range(5):
        torch.testing.assert_close(ridge.qr_solve(x, rhs, torch.zeros(256, dtype=torch.float64)), want,
                                   rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("n", [3, 8, 20])
@pytest.mark.parametrize("lam", [0.0, 0.3])
@pytest.mark.parametrize("labels", [(), (4,)])
def test_solve_matches_numpy_below_at_and_above_the_dimension(n: int, lam: float, labels: tuple[int, ...]) -> None:
    """n < d (the dual system), n = d and n > d, scalar and vector labels."""
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(16, n, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(16, n, *labels, generator=gen, dtype=torch.float64)
    w = ridge.solve(x, y, lam)
    for i in range(16):
        ref = reference(x[i].numpy(), y[i].numpy(), lam)
        np.testing.assert_allclose(w[i].numpy(), ref.T, rtol=1e-9, atol=1e-11)


def test_singular_and_ill_conditioned_prompts_are_solved_by_qr(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated column (rank-deficient X) and a column scaled by 1e-5 (cond(X^T X) ~ 1e10) leave the normal
    equations for the QR solve, and get NumPy's minimum-norm answer; the well-conditioned prompts do not."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 30, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 30, generator=gen, dtype=torch.float64)
    x[0, :, 4] = x[0, :, 3]
    x[1, :, 2] *= 1e-5
    solved_by_qr = []

    def spy(x: torch.Tensor, rhs: torch.Tensor, lam: float) -> torch.Tensor:
        solved_by_qr.append(len(x))
        return qr_solve(x, rhs, lam)

    qr_solve = ridge.qr_solve
    monkeypatch.setattr(ridge, "qr_solve", spy)
    w = ridge.solve(x, y, 0.0)
    assert solved_by_qr == [2]
    for i in range(6):
        np.testing.assert_allclose(w[i].numpy(), reference(x[i].numpy(), y[i].numpy(), 0.0), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n", [3, 8, 20])
def test_a_penalty_per_prompt_is_each_prompts_own_solve(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Penalties (B,), zero for some prompts, below, at and above the dimension, with two ill-conditioned prompts
    (a column scaled by 1e-6, penalties 0 and 1e-9) that take the QR solve from n = d on (below, X X^T is
    well-conditioned): each prompt gets NumPy's solution at its own penalty."""
    gen = torch.Generator().manual_seed(n + 100)
    x = torch.randn(6, n, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(6, n, generator=gen, dtype=torch.float64)
    x[3, :, 1] *= 1e-6
    x[4, :, 2] *= 1e-6
    lam = torch.tensor([0.0, 0.5, 3.0, 0.0, 1e-9, 1e-3], dtype=torch.float64)
    penalties = []
    qr_solve = ridge.qr_solve
    monkeypatch.setattr(ridge, "qr_solve", lambda x, rhs, lam: penalties.append(lam.tolist()) or qr_solve(x, rhs, lam))
    w = ridge.solve(x, y, lam)
    assert penalties == ([[0.0, 1e-9]] if n >= 8 else [])
    for i in range(6):
        ref = reference(x[i].numpy(), y[i].numpy(), float(lam[i]))
        np.testing.assert_allclose(w[i].numpy(), ref, rtol=1e-7, atol=1e-9)
