"""Sparse regression: y = X beta* + noise with k-sparse beta*, against a fixed, shifted or fresh X."""

from __future__ import annotations

import math

import numpy as np
import torch

from iclbench.tasks import portable
from iclbench.tasks.family import Draw, Family, gaussian, stream
from iclbench.tasks.spec import TaskSpec, f32


def sparse_vectors(rng: np.random.Generator, batch: int, d: int, k: int) -> np.ndarray:
    """(batch, d) vectors with k N(0, 1) non-zeros (float32-representable) on a uniformly drawn support."""
    support = np.argsort(rng.random((batch, d)), axis=1)[:, :k]
    beta = np.zeros((batch, d))
    np.put_along_axis(beta, support, f32(gaussian(rng, batch, k)), axis=1)
    return beta


class Lasso(Family):
    """`mode` "fixed": every prompt measures with X0 (rows N(0, I), from `matrix_seed`);
    "shift": X = (X0 + s G) / sqrt(1 + s^2) with fresh Gaussian G; "random": X = G.

    Prompts of length n use the first n rows of their matrix; queries are fresh N(0, I).
    """

    def public(self, spec: TaskSpec) -> dict[str, torch.Tensor]:
        return {"X0": torch.from_numpy(self._x0(spec))}

    @staticmethod
    def _x0(spec: TaskSpec) -> np.ndarray:
        return f32(gaussian(stream(spec.params["matrix_seed"]), spec.max_length, spec.d))

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        d, mode = spec.d, spec.params["mode"]
        beta = sparse_vectors(rng, batch, d, spec.params["k"])
        if mode == "random":
            x = f32(gaussian(rng, batch, n, d))
        else:
            x0 = self._x0(spec)
            if n > x0.shape[0]:
                raise ValueError(f"{spec.name}: prompts are at most {x0.shape[0]} long (rows of X0), got {n}")
            x0 = np.broadcast_to(x0[:n], (batch, n, d))
            if mode == "fixed":
                x = x0.copy()
            elif mode == "shift":
                s = spec.params["shift"]
                x = f32((x0 + s * gaussian(rng, batch, n, d)) / math.sqrt(1 + s * s))
            else:
                raise ValueError(f"{spec.name}: unknown lasso mode {mode!r}")
        x_query = f32(gaussian(rng, batch, q, d))
        f_query = f32(portable.dot(x_query, beta[:, None, :]))
        y = f32(portable.dot(x, beta[:, None, :]) + spec.noise * gaussian(rng, batch, n))
        y_query = f32(f_query + spec.noise * gaussian(rng, batch, q))
        return Draw(x, y, x_query, y_query, {"f_query": f_query, "w": beta})
