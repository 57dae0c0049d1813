"""Gaussian-process regression on the sphere: labels drawn jointly from GP(0, K)."""

from __future__ import annotations

import numpy as np
import torch

from iclbench.kernels import gram
from iclbench.tasks.family import Draw, Family, gaussian
from iclbench.tasks.spec import TaskSpec, f32


class Kernel(Family):
    """x uniform on S^(d-1); context and query labels drawn jointly, noiseless, from
    GP(0, K) with K the `kernel` of `iclbench.kernels` (linear, exp or relu)."""

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        z = gaussian(rng, batch, n + q, spec.d)
        pts = f32(z / z.norm(dim=-1, keepdim=True))
        evals, evecs = torch.linalg.eigh(gram(pts, pts, spec.params["kernel"]))
        labels = f32(evecs @ (evals.clamp(min=0).sqrt() * gaussian(rng, batch, n + q)).unsqueeze(-1)).squeeze(-1)
        y_query = labels[:, n:]
        return Draw(pts[:, :n], labels[:, :n], pts[:, n:], y_query, {"f_query": y_query})
