"""Gaussian-process regression on the sphere: labels drawn jointly from GP(0, K)."""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from iclbench.tasks import portable
from iclbench.tasks.family import Draw, Family, gaussian
from iclbench.tasks.spec import TaskSpec, f32


class Kernel(Family):
    """x uniform on S^(d-1); context and query labels drawn jointly from GP(0, K).

    K is the `kernel` of `iclbench.kernels` (linear, exp or relu). Linear-kernel labels
    are drawn in weight space, y = x^T v with v ~ N(0, I) (exactly GP(0, x^T x'), whose
    Gram matrix has rank d); the others as L g with L the Cholesky factor (unique) of
    K + `jitter` I and g ~ N(0, I), so the labels have covariance K + jitter I.
    """

    dimension_axes = MappingProxyType({})

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        z = gaussian(rng, batch, n + q, spec.d)
        pts = f32(z / np.sqrt(portable.dot(z, z))[..., None])
        kind = spec.params["kernel"]
        if kind == "linear":
            labels = f32(portable.dot(pts, gaussian(rng, batch, spec.d)[:, None, :]))
        else:
            k = gram(pts, kind) + spec.params["jitter"] * np.eye(n + q)
            labels = f32(portable.dot(portable.cholesky(k), gaussian(rng, batch, n + q)[:, None, :]))
        y_query = labels[:, n:]
        return Draw(pts[:, :n], labels[:, :n], pts[:, n:], y_query, {"f_query": y_query})


def gram(pts: np.ndarray, kind: str) -> np.ndarray:
    """K(x_i, x_j) of (B, m, d) points, in `portable` arithmetic (`iclbench.kernels.gram` defines the kernels)."""
    dot = portable.matmul(pts, np.swapaxes(pts, -1, -2))
    if kind == "exp":
        return portable.exp(dot)
    if kind == "relu":
        norm = np.sqrt(portable.dot(pts, pts))
        norms = norm[..., :, None] * norm[..., None, :]
        cos = np.clip(dot / norms, -1.0, 1.0)
        t = portable.arccos(cos)
        return norms * (np.sqrt(1.0 - cos * cos) + (math.pi - t) * cos) / math.pi
    raise ValueError(f"kernel {kind!r} has no Gram matrix here; expected exp or relu")
