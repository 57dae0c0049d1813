"""Logistic classification: labels sign(x^T w), scored against the regularised optimum's logit."""

from __future__ import annotations

import numpy as np
import torch

from iclbench.solvers import logistic_optimum
from iclbench.tasks.family import Draw, Family, covariance, gaussian
from iclbench.tasks.spec import TaskSpec, f32


class Logistic(Family):
    """x ~ N(0, Sigma) with condition number `kappa`, w ~ N(0, I), labels in {-1, 1}.

    The target at prompt length n is x_query^T w_mu, where w_mu minimises the mean
    logistic loss on the n context pairs plus (mu / 2) ||w||^2.
    """

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        d = spec.d
        sigma, root = covariance(rng, batch, d, spec.params["kappa"])
        w = f32(gaussian(rng, batch, d))
        x = f32(gaussian(rng, batch, n, d) @ root)
        x_query = f32(gaussian(rng, batch, q, d) @ root)
        y = torch.sign(torch.einsum("bnd,bd->bn", x, w))
        y_query = torch.sign(torch.einsum("bqd,bd->bq", x_query, w))
        return Draw(x, y, x_query, y_query, {"w": w, "sigma": f32(sigma)})

    def target(self, spec: TaskSpec, draw: Draw, n: int) -> torch.Tensor:
        w_mu = logistic_optimum(draw.x[:, :n], draw.y[:, :n], spec.params["mu"])
        return f32(torch.einsum("bqd,bd->bq", draw.x_query, w_mu))
