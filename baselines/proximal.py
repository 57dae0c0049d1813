"""ISTA, FISTA and the exact lasso solution: proximal gradient on (1/2)||y - X b||^2 + lambda ||b||_1.

All three share one proximal-gradient step, batched over prompts in float64, with
step 1/L per prompt, L = ||X||_2^2. On the lasso family lambda is the task's tuned
penalty (`lasso_lambda`); on the linear family ISTA and FISTA run with lambda = 0,
that is gradient descent on least squares with step 1/L.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from iclbench import Batch, Model, Prediction, TaskSpec

ITERATIONS = 1024
"""The iteration budget K of ISTA and FISTA (every iterate's prediction is returned as a step)."""

GAP_TOL = 1e-12
"""`lasso_exact` checks that every duality gap is below GAP_TOL * (1/2)||y||^2 (the objective at b = 0)."""

LAMBDA_FILE = Path(__file__).with_name("lasso_lambda.json")
"""The tuned lasso penalties, written by `python -m iclbench.baselines.tune_lasso`."""


def soft(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Soft thresholding sign(v) max(|v| - t, 0), with t >= 0 broadcast against v."""
    return v - v.clamp(-t, t)


def penalties(lam: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """lambda as a (B, 1) float64 tensor on `like`'s device: one value for all prompts, or one per prompt."""
    lam = torch.as_tensor(lam, dtype=torch.float64, device=like.device)
    if lam.dim() > 1 or (lam.dim() == 1 and lam.shape[0] != batch):
        raise ValueError(f"lambda must be a number or a ({batch},) tensor, got shape {tuple(lam.shape)}")
    if bool((lam < 0).any()):
        raise ValueError("lambda must be non-negative")
    return lam.expand(batch).unsqueeze(-1)


@dataclass(frozen=True)
class LassoProblem:
    """(1/2)||y - X b||^2 + lambda ||b||_1 for a batch of prompts, in float64.

    `gram` (B, d, d) is X^T X, `xty` (B, d) X^T y, `lam` (B, 1) the penalty and
    `step` (B, 1) the step 1/L, L = ||X||_2^2 (0 where X = 0, which leaves b at 0).
    """

    gram: torch.Tensor
    xty: torch.Tensor
    lam: torch.Tensor
    step: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor) -> LassoProblem:
        """The problem of the prompts `x` (B, n, d), `y` (B, n); `lam` a number or a (B,) tensor."""
        if x.dim() != 3 or y.shape != x.shape[:2]:
            raise ValueError(f"expected x (B, n, d) and y (B, n), got {tuple(x.shape)} and {tuple(y.shape)}")
        x, y = x.double(), y.double()
        gram = x.mT @ x
        small = gram if x.shape[2] <= x.shape[1] else x @ x.mT
        lipschitz = torch.linalg.eigvalsh(small)[:, -1:]
        step = torch.where(lipschitz > 0, 1 / lipschitz, torch.zeros_like(lipschitz))
        xty = (x.mT @ y.unsqueeze(-1)).squeeze(-1)
        return cls(gram, xty, penalties(lam, x.shape[0], x), step)

    def prox_step(self, z: torch.Tensor) -> torch.Tensor:
        """soft(z + X^T (y - X z) / L, lambda / L): one proximal-gradient step from z (B, d)."""
        residual_corr = torch.baddbmm(self.xty.unsqueeze(-1), self.gram, z.unsqueeze(-1), alpha=-1).squeeze(-1)
        return soft(z + self.step * residual_corr, self.lam * self.step)

    def iterates(self, iters: int, accelerated: bool, start: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """b_1, ..., b_iters of ISTA, or of FISTA when `accelerated`, from `start` (zero by default).

        FISTA: t_1 = 1, t+ = (1 + sqrt(1 + 4 t^2)) / 2, z = b+ + ((t - 1) / t+)(b+ - b).
        """
        b = self.xty.new_zeros(self.xty.shape) if start is None else start
        z, t = b, 1.0
        for _ in range(iters):
            b_next = self.prox_step(z)
            if accelerated:
                t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
                z = b_next + ((t - 1) / t_next) * (b_next - b)
                t = t_next
            else:
                z = b_next
            b = b_next
            yield b


def duality_gap(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """P(b) - D(theta) >= P(b) - P(b*) for each prompt, in float64 (B,).

    P(b) = (1/2)||y - X b||^2 + lambda ||b||_1, D(theta) = (1/2)||y||^2 - (1/2)||y - theta||^2
    with the dual-feasible theta = r min(1, lambda / ||X^T r||_inf), r = y - X b.
    """
    x, y, b = x.double(), y.double(), b.double()
    lam = penalties(lam, x.shape[0], x).squeeze(-1)
    r = y - (x @ b.unsqueeze(-1)).squeeze(-1)
    corr = (x.mT @ r.unsqueeze(-1)).squeeze(-1).abs().amax(-1)
    scale = torch.where(corr > lam, lam / corr, torch.ones_like(corr))
    primal = 0.5 * (r * r).sum(-1) + lam * b.abs().sum(-1)
    dual = 0.5 * (y * y).sum(-1) - 0.5 * ((y - scale.unsqueeze(-1) * r) ** 2).sum(-1)
    return primal - dual


def _active_solve(problem: LassoProblem, active: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve X_A^T X_A u_A = rhs_A on each prompt's active set A (u = 0 off A); (B, d)."""
    eye = torch.eye(active.shape[-1], dtype=rhs.dtype, device=rhs.device)
    system = problem.gram * (active.unsqueeze(-1) & active.unsqueeze(-2)) + eye * (~active).unsqueeze(-1)
    return torch.linalg.solve(system, (rhs * active).unsqueeze(-1)).squeeze(-1)


def lasso_exact(
    x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor, tol: float = GAP_TOL, max_events: int = 1000
) -> torch.Tensor:
    """argmin_b (1/2)||y - X b||^2 + lambda ||b||_1 per prompt, in float64 (B, d), lambda > 0.

    The homotopy (LARS-lasso) path, batched: from lambda_max = ||X^T y||_inf, where
    b = 0, lambda decreases to its target while b stays the solution, b_A(lambda) =
    (X_A^T X_A)^-1 (X_A^T y - lambda s_A); a coordinate joins the active set A when its
    correlation |x_j^T (y - X b)| reaches lambda and leaves it when b_j crosses zero.
    At the target, b_A is solved once more from A and its signs; `_refine` then brings
    every prompt's duality gap below `tol` (1/2)||y||^2.
    """
    problem = LassoProblem.of(x, y, lam)
    target = problem.lam.squeeze(-1)
    if bool((target <= 0).any()):
        raise ValueError("lasso_exact needs lambda > 0 (with lambda = 0 use least squares)")
    gram, xty = problem.gram, problem.xty
    level, first = xty.abs().max(-1)
    active = torch.nn.functional.one_hot(first, xty.shape[-1]).bool() & (level > target).unsqueeze(-1)
    signs = xty.sign() * active
    b = torch.zeros_like(xty)
    just_dropped = torch.zeros_like(active)
    level = torch.maximum(level, target)
    todo = torch.nonzero(level > target).squeeze(-1)
    for _ in range(max_events):
        if todo.numel() == 0:
            break
        sub = LassoProblem(gram[todo], xty[todo], problem.lam[todo], problem.step[todo])
        act, sgn, bt, lev, left = active[todo], signs[todo], b[todo], level[todo], just_dropped[todo]
        direction = _active_solve(sub, act, sgn)
        corr = xty[todo] - (gram[todo] @ bt.unsqueeze(-1)).squeeze(-1)
        slope = (gram[todo] @ direction.unsqueeze(-1)).squeeze(-1)
        eps = 1e-12 * lev.unsqueeze(-1)
        inf = torch.full_like(corr, math.inf)
        join_up = (lev.unsqueeze(-1) - corr) / (1 - slope)
        join_down = (lev.unsqueeze(-1) + corr) / (1 + slope)
        join = torch.minimum(torch.where(join_up > eps, join_up, inf), torch.where(join_down > eps, join_down, inf))
        join = torch.where(act | left, inf, join)
        cross = -bt / direction
        drop = torch.where(act & (cross > eps), cross, inf)
        gamma_join, j_join = join.min(-1)
        gamma_drop, j_drop = drop.min(-1)
        remaining = lev - target[todo]
        gamma = torch.minimum(torch.minimum(gamma_join, gamma_drop), remaining)
        bt = bt + gamma.unsqueeze(-1) * direction
        lev = lev - gamma
        joins = (gamma_join <= gamma_drop) & (gamma_join < remaining)
        drops = (gamma_drop < gamma_join) & (gamma_drop < remaining)
        rows = torch.arange(todo.numel(), device=todo.device)
        new_sign = (corr[rows, j_join] - gamma * slope[rows, j_join]).sign()
        act = act.clone()
        sgn = sgn.clone()
        act[rows[joins], j_join[joins]] = True
        sgn[rows[joins], j_join[joins]] = new_sign[joins]
        act[rows[drops], j_drop[drops]] = False
        sgn[rows[drops], j_drop[drops]] = 0.0
        bt[rows[drops], j_drop[drops]] = 0.0
        left = torch.zeros_like(act)
        left[rows[drops], j_drop[drops]] = True
        active[todo], signs[todo], b[todo], level[todo], just_dropped[todo] = act, sgn, bt, lev, left
        todo = todo[lev > target[todo]]
    else:
        raise RuntimeError(f"lasso_exact: {todo.numel()} prompts did not reach their lambda in {max_events} events")
    b = _active_solve(problem, active, xty - problem.lam * signs)
    return _refine(problem, x, y, b, tol)


def _refine(
    problem: LassoProblem, x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, tol: float, rounds: int = 12
) -> torch.Tensor:
    """`b` with every duality gap below `tol` (1/2)||y||^2.

    Prompts above it (the homotopy can lose its way to round-off on nearly singular
    active sets) get rounds of FISTA from their point (50, 100, 200, ... steps), each
    followed by an active-set solve on the support and signs reached, keeping the point
    of smaller gap.
    """
    threshold = tol * 0.5 * (y.double() ** 2).sum(-1)
    gap = duality_gap(x, y, b, problem.lam.squeeze(-1))
    todo = torch.nonzero(~(gap <= threshold)).squeeze(-1)
    for k in range(rounds):
        if todo.numel() == 0:
            return b
        sub = LassoProblem(problem.gram[todo], problem.xty[todo], problem.lam[todo], problem.step[todo])
        *_, fista = sub.iterates(50 * 2**k, accelerated=True, start=b[todo])
        solved = _active_solve(sub, fista != 0, sub.xty - sub.lam * fista.sign())
        gaps = [duality_gap(x[todo], y[todo], p, sub.lam.squeeze(-1)) for p in (fista, solved)]
        better = gaps[1] < gaps[0]
        b[todo] = torch.where(better.unsqueeze(-1), solved, fista)
        todo = todo[~(torch.where(better, gaps[1], gaps[0]) <= threshold[todo])]
    raise RuntimeError(
        f"lasso_exact: {todo.numel()} prompts (first: {int(todo[0])}) have a duality gap above {tol:g} x (1/2)||y||^2"
    )


@lru_cache(maxsize=1)
def tuned_lambdas() -> dict[str, float]:
    """The tuned penalty of every lasso task at its nominal length, from `LAMBDA_FILE`."""
    try:
        return json.loads(LAMBDA_FILE.read_text())["lambda"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"cannot read the tuned lasso penalties from {LAMBDA_FILE}: {exc}") from exc


def lasso_lambda(spec: TaskSpec, n: int) -> float:
    """The lasso penalty for prompts of length n: the tuned one, scaled by sqrt(n / nominal).

    The objective sums n squared residuals, so the noise's correlation with the
    columns, ||X^T eps||_inf, which the penalty must dominate, grows as sqrt(n).
    """
    table = tuned_lambdas()
    if spec.name not in table:
        raise ValueError(f"no tuned lasso penalty for task {spec.name!r} in {LAMBDA_FILE}")
    return table[spec.name] * math.sqrt(n / spec.nominal)


class ISTA(Model):
    """ISTA from b = 0 for `ITERATIONS` steps: lasso with the tuned penalty, least squares (lambda = 0) on linear."""

    name = "ista"
    accelerated = False
    iterations = ITERATIONS

    def supports(self, task: TaskSpec) -> bool:
        return task.family in ("lasso", "linear")

    def predict(self, batch: Batch) -> Prediction:
        lam = lasso_lambda(batch.task, batch.n) if batch.task.family == "lasso" else 0.0
        problem = LassoProblem.of(batch.x, batch.y, lam)
        path = problem.xty.new_empty(batch.x.shape[0], self.iterations, batch.task.d)
        for k, b in enumerate(problem.iterates(self.iterations, self.accelerated)):
            path[:, k] = b
        steps = path @ batch.x_query.double().mT
        dtype = batch.x.dtype
        return Prediction(steps[:, -1].to(dtype), steps.to(dtype), path[:, -1].to(dtype))


class FISTA(ISTA):
    """FISTA (accelerated ISTA) from b = 0 for `ITERATIONS` steps."""

    name = "fista"
    accelerated = True


class LassoExact(Model):
    """The exact lasso solution with the tuned penalty (duality gap below `GAP_TOL`): the converged reference."""

    name = "lasso-exact"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "lasso"

    def predict(self, batch: Batch) -> Prediction:
        b = lasso_exact(batch.x, batch.y, lasso_lambda(batch.task, batch.n))
        y = (batch.x_query.double() @ b.unsqueeze(-1)).squeeze(-1)
        return Prediction(y.to(batch.x.dtype), w=b.to(batch.x.dtype))
