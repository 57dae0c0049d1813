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
    pooled = True

    def prior(self, spec: TaskSpec, rng: np.random.Generator, count: int) -> np.ndarray:
        return weights(rng, count, spec.d)

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        return regression(spec, rng, batch, n, q, spec.noise)

    def draw_given(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int, w: np.ndarray) -> Draw:
        return regression(spec, rng, batch, n, q, spec.noise, w)


def weights(rng: np.random.Generator, count: int, d: int) -> np.ndarray:
    """`count` hidden vectors w / sqrt(d), w ~ N(0, I_d): the linear family's prior."""
    return f32(gaussian(rng, count, d) / math.sqrt(d))


def regression(spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int, noise: float | np.ndarray,
               w: np.ndarray | None = None) -> Draw:
    """Prompts y = x^T w + noise * eps, x ~ N(0, Sigma) with condition number `kappa` (1 without one); w from
    `weights` unless given (B, d); `noise` a standard deviation, or one per prompt (B, 1)."""
    d = spec.d
    sigma, root = covariance_root(rng, batch, d, spec.params.get("kappa", 1))
    w = weights(rng, batch, d) if w is None else w
    x = f32(portable.matmul(gaussian(rng, batch, n, d), np.swapaxes(root, -1, -2)))
    x_query = f32(portable.matmul(gaussian(rng, batch, q, d), np.swapaxes(root, -1, -2)))
    f = portable.dot(x, w[:, None, :])
    f_query = f32(portable.dot(x_query, w[:, None, :]))
    y = f32(f + noise * gaussian(rng, batch, n))
    y_query = f32(f_query + noise * gaussian(rng, batch, q))
    return Draw(x, y, x_query, y_query, {"f_query": f_query, "w": w}, {"sigma": f32(sigma)})
