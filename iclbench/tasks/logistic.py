"""Logistic classification: labels sign(x^T w), scored against the regularised optimum's logit."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from iclbench.tasks import portable
from iclbench.tasks.family import Draw, Family, covariance_root, gaussian
from iclbench.tasks.spec import TaskSpec, f32


class Logistic(Family):
    """x ~ N(0, Sigma) with condition number `kappa`, w ~ N(0, I), labels in {-1, 1}.

    The target at prompt length n is x_query^T w_mu, where w_mu minimises the mean
    logistic loss on the n context pairs plus (mu / 2) ||w||^2 (`optimum`).
    """

    dimension_axes = MappingProxyType({"w": (-1,), "sigma": (-2, -1)})

    def classifies(self, spec: TaskSpec) -> bool:
        return True

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        d = spec.d
        sigma, root = covariance_root(rng, batch, d, spec.params["kappa"])
        w = f32(gaussian(rng, batch, d))
        x = f32(portable.matmul(gaussian(rng, batch, n, d), np.swapaxes(root, -1, -2)))
        x_query = f32(portable.matmul(gaussian(rng, batch, q, d), np.swapaxes(root, -1, -2)))
        y = np.sign(portable.dot(x, w[:, None, :]))
        y_query = np.sign(portable.dot(x_query, w[:, None, :]))
        return Draw(x, y, x_query, y_query, {"w": w}, {"sigma": f32(sigma)})

    def target(self, spec: TaskSpec, draw: Draw, n: int) -> np.ndarray:
        w_mu = optimum(draw.x[:, :n], draw.y[:, :n], spec.params["mu"])
        return f32(portable.dot(draw.x_query, w_mu[:, None, :]))


def _gradient(x: np.ndarray, y: np.ndarray, w: np.ndarray, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """The loss gradient (B, d) at w, and sigmoid(-margin) (B, n)."""
    p = 1.0 / (1.0 + portable.exp(y * portable.dot(x, w[:, None, :])))
    coef = y * p
    g = coef[:, 0, None] * x[:, 0]
    for i in range(1, x.shape[1]):
        g = g + coef[:, i, None] * x[:, i]
    return mu * w - g / x.shape[1], p


def optimum(x: np.ndarray, y: np.ndarray, mu: float, tol: float = 1e-20, max_iter: int = 100) -> np.ndarray:
    """argmin_w mean_i log(1 + exp(-y_i x_i^T w)) + (mu / 2) ||w||^2 per prompt, in `portable` arithmetic.

    Newton's method from w = 0 with a backtracking line search on the gradient's norm (the
    Newton direction H^-1 g decreases ||g||^2, and the loss is mu-strongly convex, so the
    iteration converges from anywhere and takes full steps near the optimum). Once every
    prompt's Newton decrement g^T H^-1 g is below `tol`, one last full step lands at round-off.
    """
    b, n, d = x.shape
    w = np.zeros((b, d))
    eye = np.eye(d)
    for _ in range(max_iter):
        g, p = _gradient(x, y, w, mu)
        c = p * (1.0 - p) / n
        hess = mu * eye + c[:, 0, None, None] * (x[:, 0, :, None] * x[:, 0, None, :])
        for i in range(1, n):
            hess = hess + c[:, i, None, None] * (x[:, i, :, None] * x[:, i, None, :])
        step = portable.solve_spd(hess, g)
        if np.max(portable.dot(g, step)) < tol:
            return w - step
        norm2 = portable.dot(g, g)
        t = np.ones(b)
        for _ in range(40):
            trial, _ = _gradient(x, y, w - t[:, None] * step, mu)
            ok = portable.dot(trial, trial) <= (1.0 - 1e-4 * t) * norm2
            if ok.all():
                break
            t = np.where(ok, t, t / 2)
        w = w - t[:, None] * step
    raise RuntimeError(f"logistic optimum: Newton did not converge in {max_iter} iterations")
