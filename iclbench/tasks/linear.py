"""Linear regression: y = x^T w / sqrt(d) + noise, x ~ N(0, Sigma), w ~ N(0, I)."""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from iclbench.tasks import portable
from iclbench.tasks.family import Draw, Family, covariance_root, gaussian
from iclbench.tasks.spec import TaskSpec, f32


class Linear(Family):
    """Sigma has condition number `kappa` (identity for kappa = 1); hidden `w` is w / sqrt(d)."""

    dimension_axes = MappingProxyType({"w": (-1,), "sigma": (-2, -1)})

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        d = spec.d
        sigma, root = covariance_root(rng, batch, d, spec.params["kappa"])
        w = f32(gaussian(rng, batch, d) / math.sqrt(d))
        x = f32(portable.matmul(gaussian(rng, batch, n, d), np.swapaxes(root, -1, -2)))
        x_query = f32(portable.matmul(gaussian(rng, batch, q, d), np.swapaxes(root, -1, -2)))
        f = portable.dot(x, w[:, None, :])
        f_query = f32(portable.dot(x_query, w[:, None, :]))
        y = f32(f + spec.noise * gaussian(rng, batch, n))
        y_query = f32(f_query + spec.noise * gaussian(rng, batch, q))
        return Draw(x, y, x_query, y_query, {"f_query": f_query, "w": w}, {"sigma": f32(sigma)})
