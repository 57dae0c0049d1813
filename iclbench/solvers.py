"""Exact solvers shared by task generation and baselines (batched, any device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logistic_loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, mu: float) -> torch.Tensor:
    """mean_i log(1 + exp(-y_i x_i^T w)) + (mu / 2) ||w||^2 for (B, n, d), (B, n), (B, ..., d)."""
    margins = y.unsqueeze(-2) * (w @ x.mT) if w.dim() == 3 else y * torch.einsum("bnd,bd->bn", x, w)
    return F.softplus(-margins).mean(-1) + 0.5 * mu * (w * w).sum(-1)


def logistic_optimum(
    x: torch.Tensor, y: torch.Tensor, mu: float, tol: float = 1e-14, max_iter: int = 100
) -> torch.Tensor:
    """argmin_w of `logistic_loss` for every prompt, by Newton's method with backtracking.

    Runs in float64. Once every prompt's squared Newton decrement is below `tol` (inside
    the region of quadratic convergence), one last full step brings it to round-off.
    """
    x, y = x.double(), y.double()
    b, n, d = x.shape
    w = x.new_zeros(b, d)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    steps = 0.5 ** torch.arange(16, dtype=x.dtype, device=x.device)
    for _ in range(max_iter):
        p = torch.sigmoid(-y * torch.einsum("bnd,bd->bn", x, w))
        grad = -torch.einsum("bnd,bn->bd", x, y * p) / n + mu * w
        hess = (x * (p * (1 - p)).unsqueeze(-1)).mT @ x / n + mu * eye
        direction = torch.linalg.solve(hess, grad)
        decrement = (grad * direction).sum(-1)
        if decrement.max() < tol:
            return w - direction
        trial = w.unsqueeze(1) - steps[:, None] * direction.unsqueeze(1)
        accept = logistic_loss(x, y, trial, mu) <= (
            logistic_loss(x, y, w, mu).unsqueeze(-1) - 0.25 * steps * decrement.unsqueeze(-1)
        )
        step = torch.where(accept.any(-1), steps[accept.int().argmax(-1)], 0.0)
        w = w - step.unsqueeze(-1) * direction
    raise RuntimeError(f"logistic_optimum: Newton did not converge in {max_iter} iterations")
