"""Exact ridge regression and minimum-norm least squares, solved in float64.

Scalar labels y = x^T w give w (B, d); vector labels y = W x (the `ar` family) give W (B, m, d),
each row the regression of one label coordinate on x.
"""

from __future__ import annotations

import torch

from iclbench import Batch, Model, Prediction, TaskSpec

REGRESSION_FAMILIES = ("linear", "lasso", "kernel", "ar", "garg")


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


ILL_CONDITIONED = 1e8
"""`solve` leaves to a QR solve the prompts whose normal matrix has a condition number above this
(estimated from its Cholesky factor): there the normal equations would lose more than half the digits."""


def solve(x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """argmin_w ||y - x w||^2 + lam ||w||^2 per prompt (minimum-norm when lam = 0), in float64.

    y (B, n) gives w (B, d); y (B, n, m) gives W (B, m, d), one such regression per label coordinate.
    `lam` is one penalty, or a positive penalty per prompt (B,).
    By the normal equations (X^T X + lam I) w = X^T y, or for n < d by w = X^T z with
    (X X^T + lam I) z = y (the minimum-norm solution at lam = 0), solved by Cholesky with one step of
    iterative refinement against X itself (the corrected semi-normal equations: a QR solve's accuracy
    while cond(X)^2 eps << 1); a prompt whose normal matrix is not positive definite or is
    ill-conditioned (`ILL_CONDITIONED`) is solved by QR instead (`qr_solve`).
    """
    x, rhs = x.double(), (y.unsqueeze(-1) if y.dim() == 2 else y).double()
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device).expand(len(x))
    dual = x.shape[1] < x.shape[2]
    normal = x @ x.mT if dual else x.mT @ x
    normal.diagonal(dim1=-2, dim2=-1).add_(lam.unsqueeze(-1))
    factor, info = torch.linalg.cholesky_ex(normal)
    diag = factor.diagonal(dim1=-2, dim2=-1)
    poor = (info != 0) | ~((diag.amax(-1) / diag.amin(-1)) ** 2 <= ILL_CONDITIONED)
    if dual:
        z = torch.cholesky_solve(rhs, factor)
        z += torch.cholesky_solve(rhs - x @ (x.mT @ z) - lam[:, None, None] * z, factor)
        sol = x.mT @ z
    else:
        sol = torch.cholesky_solve(x.mT @ rhs, factor)
        sol += torch.cholesky_solve(x.mT @ (rhs - x @ sol) - lam[:, None, None] * sol, factor)
    if bool(poor.any()):
        sol[poor] = qr_solve(x[poor], rhs[poor], lam[poor])
    return sol.squeeze(-1) if y.dim() == 2 else sol.mT


def qr_solve(x: torch.Tensor, rhs: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The (B, d, k) ridge solution of float64 x (B, n, d), rhs (B, n, k) and penalties lam (B,) as the
    least-squares solution of [X; sqrt(lam) I] w = [rhs; 0]: LAPACK's gelsd (by the SVD) on the CPU, the
    pseudo-inverse elsewhere. (gelsy, a complete orthogonal factorisation, returned other solutions than the
    minimum-norm one, different from call to call, on batches of rank-deficient prompts.)"""
    if bool((lam > 0).any()):  # zero rows where lam = 0 leave the minimum-norm solution as it is
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device) * lam.sqrt()[:, None, None]
        zeros = rhs.new_zeros(len(x), x.shape[-1], rhs.shape[-1])
        x, rhs = torch.cat([x, eye], 1), torch.cat([rhs, zeros], 1)
    if x.device.type == "cpu":
        return torch.linalg.lstsq(x, rhs, driver="gelsd").solution
    return torch.linalg.pinv(x) @ rhs


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
