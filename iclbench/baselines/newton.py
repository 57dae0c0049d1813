"""Iterative Newton: Newton-Schulz iterations for the inverse (linear, kernel) and damped Newton (logistic).

Linear tasks: A = X^T X + lambda I with lambda the task's Bayes ridge penalty
(`ridge.bayes_lambda`: 0 on noiseless tasks, so plain least squares there), M_0 = alpha A^T
with alpha = 1 / ||A A^T||_2, M <- M sum_{m<p} (-1)^m C(p, m+1) (A M)^m, w_k = M_k X^T y.
The error I - A M_k is (I - A M_0)^(p^k), so M_k tends to the pseudo-inverse of A and w_k to
the ridge solution (the minimum-norm least-squares solution when lambda = 0 and n < d):
Newton converges to the `ridge` baseline on every linear task. For n <= d the iteration runs
on the n x n matrix G = X X^T + lambda I with w_k = X^T M_k y instead: every M_k is a
polynomial in its matrix, so by X^T q(X X^T) = q(X^T X) X^T the iterates w_k are the same,
but G is invertible where X^T X is singular (on a singular matrix the round-off in the null
space grows like p^k). Kernel tasks: the same iteration on the context Gram matrix K,
prediction k_query^T M_k y (tending to the minimum-norm interpolant, the noiseless GP
posterior mean). Logistic tasks (order 2 only):
damped Newton on the mean logistic loss plus (mu / 2) ||w||^2 from 0,
w <- w - [2 sqrt(mu) / (2 sqrt(mu) + l)] H^-1 g with l = sqrt(g^T H^-1 g).
All in float64; the prediction after every step is reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from iclbench import Batch, Model, Prediction, TaskSpec
from iclbench.baselines.ridge import bayes_lambda
from iclbench.kernels import gram

REACH_BITS = 64
"""Order p runs ceil(REACH_BITS / log2(p)) steps (64 for order 2, 41 for order 3), so that every
order reaches the same p^K = 2^64 and spends about the same number of matrix products. From M_0
the error needs about log_p(cond(A)^2) steps to fall below 1/2, then converges with order p."""

LOGISTIC_BUDGET = 64
"""Damped Newton steps on the logistic tasks."""


def budget(order: int) -> int:
    """Steps run by the Newton-Schulz iteration of order `order`."""
    return math.ceil(REACH_BITS / math.log2(order))


def newton_schulz(a: torch.Tensor, order: int, n_steps: int) -> Iterator[torch.Tensor]:
    """M_1, ..., M_n_steps of the order-`order` Newton-Schulz iteration for the pseudo-inverse of a (B, m, m)."""
    if order < 2:
        raise ValueError(f"newton_schulz: the order must be at least 2, got {order}")
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    alpha = 1.0 / torch.linalg.matrix_norm(a @ a.mT, ord=2)
    m = alpha[:, None, None] * a.mT
    coef = [(-1) ** j * math.comb(order, j + 1) for j in range(order)]
    for _ in range(n_steps):
        am = a @ m
        poly = coef[-1] * eye
        for c in reversed(coef[:-1]):
            poly = c * eye + am @ poly
        m = m @ poly
        yield m


def damped_newton(x: torch.Tensor, y: torch.Tensor, mu: float, n_steps: int) -> Iterator[torch.Tensor]:
    """w_1, ..., w_n_steps of damped Newton on the mu-regularised mean logistic loss, from w = 0."""
    n, d = x.shape[1], x.shape[2]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    w = x.new_zeros(x.shape[0], d)
    for _ in range(n_steps):
        p = torch.sigmoid(-y * torch.einsum("bnd,bd->bn", x, w))
        grad = -torch.einsum("bnd,bn->bd", x, y * p) / n + mu * w
        hess = (x * (p * (1 - p)).unsqueeze(-1)).mT @ x / n + mu * eye
        direction = torch.linalg.solve(hess, grad)
        decrement = (grad * direction).sum(-1).clamp(min=0).sqrt()
        w = w - (2 * math.sqrt(mu) / (2 * math.sqrt(mu) + decrement)).unsqueeze(-1) * direction
        yield w


class Newton(Model):
    """Order-2 iterative Newton on the linear, logistic and kernel tasks."""

    name = "newton"
    order = 2
    families: tuple[str, ...] = ("linear", "logistic", "kernel")

    def supports(self, task: TaskSpec) -> bool:
        return task.family in self.families

    def iterate(self, batch: Batch, n_steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predictions (B, K, q) after each of the K steps (all of the budget, or its first `n_steps`), float64, and
        the last w on linear tasks."""
        spec = batch.task
        if spec.family not in self.families:
            raise ValueError(
                f"{self.name}: task {spec.name} has family {spec.family!r}, expected one of {self.families}"
            )
        x, y, x_query = batch.x.double(), batch.y.double(), batch.x_query.double()
        if spec.family == "logistic":
            count = min(n_steps or LOGISTIC_BUDGET, LOGISTIC_BUDGET)
            steps = x.new_empty(x.shape[0], count, x_query.shape[1])
            for k, w in enumerate(damped_newton(x, y, spec.params["mu"], count)):
                steps[:, k] = torch.einsum("bqd,bd->bq", x_query, w)
            return steps, None
        count = min(n_steps or budget(self.order), budget(self.order))
        steps = x.new_empty(x.shape[0], count, x_query.shape[1])
        if spec.family == "kernel":
            kind = spec.params["kernel"]
            features = gram(x_query, x, kind)
            for k, m in enumerate(newton_schulz(gram(x, x, kind), self.order, count)):
                steps[:, k] = torch.einsum("bqn,bnm,bm->bq", features, m, y)
            return steps, None
        lam, dual = bayes_lambda(spec), batch.n <= spec.d
        a = x @ x.mT if dual else x.mT @ x
        a = a + lam * torch.eye(a.shape[-1], dtype=x.dtype, device=x.device)
        xty = torch.einsum("bnd,bn->bd", x, y)
        for k, m in enumerate(newton_schulz(a, self.order, count)):
            w = torch.einsum("bnd,bnm,bm->bd", x, m, y) if dual else torch.einsum("bij,bj->bi", m, xty)
            steps[:, k] = torch.einsum("bqd,bd->bq", x_query, w)
        return steps, w

    def predict(self, batch: Batch) -> Prediction:
        steps, w = self.iterate(batch)
        dtype = batch.x.dtype
        return Prediction(steps[:, -1].to(dtype), steps=steps.to(dtype), w=None if w is None else w.to(dtype))


class Newton3(Newton):
    """Order-3 Newton-Schulz on the linear and kernel tasks.

    Logistic tasks are not supported: there the Newton direction is an exact solve, so an
    order-3 variant would repeat `newton`'s damped Newton step for step.
    """

    name = "newton3"
    order = 3
    families = ("linear", "kernel")
