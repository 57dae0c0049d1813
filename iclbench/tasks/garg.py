"""Garg et al.'s function classes ("What can transformers learn in-context?", 2022): x ~ N(0, I_d), noiseless labels.

`function` selects the class, each as their code (`dtsip/in-context-learning`, src/tasks.py) defines it:

- "sparse-linear": f(x) = x^T w, w with `k` N(0, 1) non-zeros on a uniformly drawn support (not scaled by
  1/sqrt(d), unlike the linear family: their labels);
- "decision-tree": a full binary tree of `depth` levels whose internal nodes each test one coordinate, drawn
  uniformly, going right when x[coordinate] > 0; leaf values N(0, 1);
- "relu2nn": f(x) = sqrt(2 / h) sum_{i <= h} a_i relu(w_i^T x), every entry of W (d x h) and a ~ N(0, 1),
  h = `hidden`;
- "quadratic": f(x) = (x * x)^T w / sqrt(3), w ~ N(0, I).

Their scalings make E[f^2] = k, 1, d and d, so their "squared error / normaliser" is the suite's `rel_err`.
Every value is computed in `portable` arithmetic (products and sums in a fixed order, comparisons, max(., 0)),
so the data are the same bits on every machine. Hidden values kept by the evaluation set: `w` (sparse-linear,
quadratic), the tree's `coords` and `leaves`; the network's `w1` (B, d, h) and `a` (B, h), 2,000 numbers a
prompt, are training-sample by-products only.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from iclbench.tasks import portable
from iclbench.tasks.family import Draw, Family, gaussian
from iclbench.tasks.lasso import sparse_vectors
from iclbench.tasks.spec import TaskSpec, f32

FUNCTIONS = ("sparse-linear", "decision-tree", "relu2nn", "quadratic")


def tree_labels(x: np.ndarray, coords: np.ndarray, leaves: np.ndarray) -> np.ndarray:
    """The labels (B, m) of points x (B, m, d) under full binary trees stored heap-wise: node j's children are
    2j + 1 (x[coords[j]] <= 0) and 2j + 2 (x[coords[j]] > 0); `coords` (B, 2^D - 1), `leaves` (B, 2^D)."""
    internal = coords.shape[-1]
    node = np.zeros(x.shape[:2], dtype=np.int64)
    while True:
        leaf = node >= internal
        if leaf.all():
            return np.take_along_axis(leaves, node - internal, axis=1)
        coord = np.take_along_axis(coords, np.minimum(node, internal - 1), axis=1)
        right = np.take_along_axis(x, coord[..., None], axis=2)[..., 0] > 0
        node = np.where(leaf, node, 2 * node + 1 + right)


def relu_network(x: np.ndarray, w1: np.ndarray, a: np.ndarray) -> np.ndarray:
    """sqrt(2 / h) sum_i a_i relu(w_i^T x) for points x (B, m, d), W (B, d, h) and a (B, h): (B, m)."""
    hidden = np.maximum(portable.matmul(x, w1), 0.0)
    return portable.dot(hidden, a[:, None, :]) * math.sqrt(2.0 / a.shape[-1])


NETWORK_WEIGHTS = ("w1", "a")
"""The relu2nn class's parameters: 2,000 numbers a prompt, exposed by training samples, not kept by evaluation sets."""


class Garg(Family):
    """The class `function` of `FUNCTIONS`; its parameters `k` (sparse-linear), `depth` (decision-tree) and
    `hidden` (relu2nn)."""

    dimension_axes = MappingProxyType({"w": (-1,), "w1": (-2,)})

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        params = self.parameters(spec, rng, batch)
        x = f32(gaussian(rng, batch, n, spec.d))
        x_query = f32(gaussian(rng, batch, q, spec.d))
        f_query = f32(self.labels(spec, x_query, params))
        hidden = {k: v for k, v in params.items() if k not in NETWORK_WEIGHTS}
        extra = {k: v for k, v in params.items() if k in NETWORK_WEIGHTS}
        return Draw(x, f32(self.labels(spec, x, params)), x_query, f_query, {"f_query": f_query, **hidden}, extra)

    @staticmethod
    def parameters(spec: TaskSpec, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """Each prompt's function, drawn before its points."""
        d, function = spec.d, spec.params["function"]
        if function == "sparse-linear":
            return {"w": sparse_vectors(rng, batch, d, min(spec.params["k"], d))}
        if function == "decision-tree":
            depth = spec.params["depth"]
            coords = rng.integers(0, d, size=(batch, 2**depth - 1))
            return {"coords": coords, "leaves": f32(gaussian(rng, batch, 2**depth))}
        if function == "relu2nn":
            h = spec.params["hidden"]
            return {"w1": f32(gaussian(rng, batch, d, h)), "a": f32(gaussian(rng, batch, h))}
        if function == "quadratic":
            return {"w": f32(gaussian(rng, batch, d))}
        raise ValueError(f"{spec.name}: unknown function class {function!r}; expected one of {', '.join(FUNCTIONS)}")

    @staticmethod
    def labels(spec: TaskSpec, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """f(x) (B, m) of points x (B, m, d), in float64 (rounded to float32 by `draw`)."""
        function = spec.params["function"]
        if function == "sparse-linear":
            return portable.dot(x, params["w"][:, None, :])
        if function == "decision-tree":
            return tree_labels(x, params["coords"], params["leaves"])
        if function == "relu2nn":
            return relu_network(x, params["w1"], params["a"])
        return portable.dot(x * x, params["w"][:, None, :]) / math.sqrt(3.0)
