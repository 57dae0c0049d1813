"""Exact ridge regression and minimum-norm least squares, solved in float64.

Scalar labels y = x^T w give w (B, d); vector labels y = W x (the `ar` family) give W (B, m, d),
each row the regression of one label coordinate on x.
"""

from __future__ import annotations

import torch

from iclbench import Batch, Model, Prediction, TaskSpec

REGRESSION_FAMILIES = ("linear", "lasso", "kernel", "ar")


def bayes_lambda(spec: TaskSpec) -> float:
    """The ridge penalty that makes ridge the posterior mean under a Gaussian prior.

    With y = x^T w + N(0, s^2) and w ~ N(0, v I), lambda = s^2 / v: v = 1/d on the
    linear family (w / sqrt(d)), v = k/d on the lasso family (the second moment of
    its k-sparse beta*), and the kernel family is noiseless. On the ar family, whose
    orthogonal W has entries of second moment 1/d, v = 1/d: the posterior mean under the
    Gaussian prior of that variance (the Haar prior's posterior mean has no closed form).
    """
    if spec.noise == 0:
        return 0.0
    prior_var = {"linear": 1.0, "lasso": spec.params.get("k", spec.d), "ar": 1.0}[spec.family] / spec.d
    return spec.noise**2 / prior_var


def solve(x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """argmin_w ||y - x w||^2 + lam ||w||^2 per prompt (minimum-norm when lam = 0), in float64.

    y (B, n) gives w (B, d); y (B, n, m) gives W (B, m, d), one such regression per label coordinate.
    `lam` is one penalty, or a positive penalty per prompt (B,).
    """
    x, rhs = x.double(), (y.unsqueeze(-1) if y.dim() == 2 else y).double()
    if isinstance(lam, torch.Tensor) or lam != 0:
        penalty = lam.to(x)[:, None, None] if isinstance(lam, torch.Tensor) else lam
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        sol = torch.linalg.solve(x.mT @ x + penalty * eye, x.mT @ rhs)
    elif x.device.type == "cpu":  # LAPACK's gelsy (complete orthogonal factorisation) on the CPU; an SVD elsewhere
        sol = torch.linalg.lstsq(x, rhs, driver="gelsy").solution
    else:
        sol = torch.linalg.pinv(x) @ rhs
    return sol.squeeze(-1) if y.dim() == 2 else sol.mT


def apply(x_query: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The linear predictions x^T w (B, q) of a (B, d) w, or W x (B, q, m) of a (B, m, d) W."""
    return torch.einsum("bqd,bd->bq" if w.dim() == 2 else "bqd,bmd->bqm", x_query, w)


class Ridge(Model):
    """Ridge with the task's Bayes penalty (`bayes_lambda`): the Bayes-optimal predictor on the linear tasks."""

    name = "ridge"

    def penalty(self, spec: TaskSpec) -> float:
        return bayes_lambda(spec)

    def supports(self, task: TaskSpec) -> bool:
        return task.family in REGRESSION_FAMILIES

    def predict(self, batch: Batch) -> Prediction:
        w = solve(batch.x, batch.y, self.penalty(batch.task))
        y = apply(batch.x_query.double(), w)
        return Prediction(y.to(batch.x.dtype), w=w.to(batch.x.dtype))


class LeastSquares(Ridge):
    """Minimum-norm least squares (ridge with lambda = 0) on every regression task."""

    name = "ols"

    def penalty(self, spec: TaskSpec) -> float:
        return 0.0
