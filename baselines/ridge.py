"""Exact ridge regression and minimum-norm least squares, solved in float64."""

from __future__ import annotations

import torch

from iclbench import Batch, Model, Prediction, TaskSpec

REGRESSION_FAMILIES = ("linear", "lasso", "kernel")


def bayes_lambda(spec: TaskSpec) -> float:
    """The ridge penalty that makes ridge the posterior mean under a Gaussian prior.

    With y = x^T w + N(0, s^2) and w ~ N(0, v I), lambda = s^2 / v: v = 1/d on the
    linear family (w / sqrt(d)), v = k/d on the lasso family (the second moment of
    its k-sparse beta*), and the kernel family is noiseless.
    """
    if spec.noise == 0:
        return 0.0
    prior_var = {"linear": 1.0 / spec.d, "lasso": spec.params.get("k", spec.d) / spec.d}[spec.family]
    return spec.noise**2 / prior_var


def solve(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_w ||y - x w||^2 + lam ||w||^2 per prompt (minimum-norm when lam = 0), in float64."""
    x, y = x.double(), y.double()
    if lam == 0:  # LAPACK's gelsy (complete orthogonal factorisation) on the CPU; an SVD elsewhere
        if x.device.type == "cpu":
            return torch.linalg.lstsq(x, y.unsqueeze(-1), driver="gelsy").solution.squeeze(-1)
        return (torch.linalg.pinv(x) @ y.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(x.mT @ x + lam * eye, (x.mT @ y.unsqueeze(-1))).squeeze(-1)


class Ridge(Model):
    """Ridge with the task's Bayes penalty: the Bayes-optimal predictor on the linear tasks."""

    name = "ridge"

    def penalty(self, spec: TaskSpec) -> float:
        return bayes_lambda(spec)

    def supports(self, task: TaskSpec) -> bool:
        return task.family in REGRESSION_FAMILIES

    def predict(self, batch: Batch) -> Prediction:
        w = solve(batch.x, batch.y, self.penalty(batch.task))
        y = torch.einsum("bqd,bd->bq", batch.x_query.double(), w)
        return Prediction(y.to(batch.x.dtype), w=w.to(batch.x.dtype))


class LeastSquares(Ridge):
    """Minimum-norm least squares (ridge with lambda = 0) on every regression task."""

    name = "ols"

    def penalty(self, spec: TaskSpec) -> float:
        return 0.0
