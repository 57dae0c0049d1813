"""ISTA, FISTA and the exact lasso solution of (1/2)||y - X b||^2 + lambda ||b||_1.

ISTA and FISTA share one proximal-gradient step, batched over prompts in float64, with
step 1/L per prompt, L = ||X||_2^2. The exact solution follows the homotopy (LARS-lasso)
path from b = 0 at lambda_max = ||X^T y||_inf down to lambda, event by event for all
prompts at once, with rank-one updates of the inverse Gram matrix of the active set
(`homotopy`); `lasso_exact` certifies it by its duality gap. On the lasso tasks (`is_lasso`:
the lasso family and garg/sparse-linear) lambda is the penalty tuned for the task and prompt
length (`lasso_lambda`); on the linear family ISTA and FISTA run with lambda = 0, that is
gradient descent on least squares with step 1/L.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import torch

from iclbench import Batch, Model, Prediction, TaskSpec

ITERATIONS = 1024
"""The iteration budget K of ISTA and FISTA (every iterate's prediction is returned as a step)."""

STEP_BLOCK = 64
"""ISTA and FISTA keep their last STEP_BLOCK iterates, and make their predictions STEP_BLOCK steps at a time."""

GAP_TOL = 1e-12
"""`lasso_exact` checks that every duality gap is below GAP_TOL times half of ||y||² (the objective at b = 0)."""

LAMBDA_FILE = Path(__file__).with_name("lasso_lambda.json")
"""The tuned lasso penalties, written by `python -m iclbench.baselines.tune_lasso`."""

FIRST_SLOTS = 4
"""The homotopy starts with room for FIRST_SLOTS active coordinates and doubles it when a prompt needs more."""

BARRIER = 1e200
"""Added, in the homotopy, to an active coordinate's distance to the penalty level: no join for it."""


def penalties(lam: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """lambda as a (B, 1) float64 tensor on `like`'s device: one value for all prompts, or one per prompt."""
    lam = torch.as_tensor(lam, dtype=torch.float64, device=like.device)
    if lam.dim() > 1 or (lam.dim() == 1 and lam.shape[0] != batch):
        raise ValueError(f"lambda must be a number or a ({batch},) tensor, got shape {tuple(lam.shape)}")
    if bool((lam < 0).any()):
        raise ValueError("lambda must be non-negative")
    return lam.expand(batch).unsqueeze(-1)


def _checked(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, n, d) and y (B, n) in float64, or a ValueError naming their shapes."""
    if x.dim() != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"expected x (B, n, d) and y (B, n), got {tuple(x.shape)} and {tuple(y.shape)}")
    return x.double(), y.double()


@dataclass(frozen=True)
class LassoProblem:
    """The lasso objective of the module for a batch of prompts, in float64.

    `gram` (B, d, d) is X^T X, `xty` (B, d) X^T y, `lam` (B, 1) the penalty and
    `step` (B, 1) the step 1/L, L = ||X||_2^2 (0 where X = 0, which leaves b at 0). A (B, d) `gram`
    is a diagonal X^T X: the problem in the eigenbasis of X^T X (`eigenbasis`).
    """

    gram: torch.Tensor
    xty: torch.Tensor
    lam: torch.Tensor
    step: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor) -> LassoProblem:
        """The problem of the prompts `x` (B, n, d), `y` (B, n); `lam` a number or a (B,) tensor."""
        x, y = _checked(x, y)
        gram = x.mT @ x
        small = gram if x.shape[2] <= x.shape[1] else x @ x.mT
        lipschitz = torch.linalg.eigvalsh(small)[:, -1:]
        step = torch.where(lipschitz > 0, 1 / lipschitz, torch.zeros_like(lipschitz))
        xty = (x.mT @ y.unsqueeze(-1)).squeeze(-1)
        return cls(gram, xty, penalties(lam, x.shape[0], x), step)

    def eigenbasis(self) -> tuple[LassoProblem, torch.Tensor]:
        """The problem in the coordinates V^T b, X^T X = V diag(e) V^T, where X^T X is diagonal, and V (B, d, d).

        Only without a penalty (least squares): the l1 norm is not invariant under rotations.
        """
        if bool((self.lam != 0).any()):
            raise ValueError("only a problem without penalty (lambda = 0) can be rotated into the eigenbasis")
        eigenvalues, v = torch.linalg.eigh(self.gram)
        return LassoProblem(eigenvalues, (self.xty.unsqueeze(-2) @ v).squeeze(-2), self.lam, self.step), v

    def iterates(
        self, iters: int, accelerated: bool, start: torch.Tensor | None = None, out: torch.Tensor | None = None
    ) -> Iterator[torch.Tensor]:
        """b_1, ..., b_iters of ISTA, or of FISTA when `accelerated`, from `start` (zero by default).

        Each step is b+ = soft(z + X^T (y - X z) / L, lambda / L), soft(v, t) = v - clamp(v, -t, t)
        = sign(v) max(|v| - t, 0); FISTA: t_1 = 1, t+ = (1 + sqrt(1 + 4 t^2)) / 2,
        z = b+ + ((t - 1) / t+)(b+ - b). With `out` (B, S, d), S >= 2, b_k is written into
        out[:, (k - 1) % S] and the views are yielded: a ring of the last S iterates.

        A step is four tensor operations (FISTA: five): the thresholds are formed once, X^T (y - X z)
        is the row y^T X - z^T G^T, a (B, 1, d) by (B, d, d) product, on the CPU about twice as fast
        as G z and measured bit-identical to it (with a diagonal G, an elementwise product), the
        gradient step one `addcmul` and FISTA's extrapolation one `lerp`.
        """
        diagonal = self.gram.dim() == 2
        gram_t = self.gram if diagonal else self.gram.mT.contiguous()
        xty = self.xty if diagonal else self.xty.unsqueeze(-2)
        upper = self.lam * self.step
        lower = -upper
        b = self.xty.new_zeros(self.xty.shape) if start is None else start
        z, t = b, 1.0
        for k in range(iters):
            if diagonal:
                corr = torch.addcmul(xty, z, gram_t, value=-1)
            else:
                corr = torch.baddbmm(xty, z.unsqueeze(-2), gram_t, alpha=-1).squeeze(-2)
            v = torch.addcmul(z, self.step, corr)
            b_next = torch.sub(v, v.clamp(lower, upper), out=None if out is None else out[:, k % out.shape[1]])
            if accelerated:
                t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
                z = torch.lerp(b_next, b, -(t - 1) / t_next)  # b+ + ((t - 1) / t+)(b+ - b)
                t = t_next
            else:
                z = b_next
            b = b_next
            yield b


def duality_gap(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """P(b) - D(theta) >= P(b) - P(b*) for each prompt, in float64 (B,).

    P is the lasso objective and D(theta) = (||y||² - ||y - theta||²) / 2, with the dual-feasible
    theta = r min(1, lambda / ||X^T r||_inf), r = y - X b.
    """
    x, y, b = x.double(), y.double(), b.double()
    lam = penalties(lam, x.shape[0], x).squeeze(-1)
    r = y - _matvec(x, b)
    corr = _matvec(x.mT, r).abs().amax(-1)
    scale = torch.where(corr > lam, lam / corr, torch.ones_like(corr))
    primal = 0.5 * (r * r).sum(-1) + lam * b.abs().sum(-1)
    dual = 0.5 * (y * y).sum(-1) - 0.5 * ((y - scale.unsqueeze(-1) * r) ** 2).sum(-1)
    return primal - dual


def _active_solve(problem: LassoProblem, active: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve X_A^T X_A u_A = rhs_A on each prompt's active set A (u = 0 off A; NaN where singular); (B, d)."""
    eye = torch.eye(active.shape[-1], dtype=rhs.dtype, device=rhs.device)
    system = problem.gram * (active.unsqueeze(-1) & active.unsqueeze(-2)) + eye * (~active).unsqueeze(-1)
    u, info = torch.linalg.solve_ex(system, (rhs * active).unsqueeze(-1))
    return torch.where((info == 0).unsqueeze(-1), u.squeeze(-1), math.nan)


def _matvec(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """m @ v for (B, p, q) and (B, q): (B, p), as v^T m^T (on the CPU a third of the time of m @ v's per-matrix
    products at the suite's sizes)."""
    return (v.unsqueeze(-2) @ m.mT).squeeze(-2)


def _pick(v: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """v[r, j[r]] for (B, d) and (B,): (B,)."""
    return v.gather(1, j.unsqueeze(-1)).squeeze(-1)


@dataclass
class _Path:
    """The homotopy's state on the prompts `rows` of the batch that have not stopped.

    The active set A lives in k slots, k <= min(n, d) (`FIRST_SLOTS` at the start, doubled by
    `widen` when a prompt has filled them): `coord` (R, k) holds the coordinate of each slot
    in use (`used`) and `cols` (R, k, d) its Gram row G_j:; `inverse` (R, k, k) is the
    inverse M of G_AA; `b`, `signs` and `direction` (R, k) are the coefficients, their signs
    s and M s, the derivative of b_A as the penalty falls. M, `b` and `direction` are zero
    on a free slot; its `coord`, `cols` and `signs` keep what was last written there (M
    being zero, they never count).

    Over coordinates (R, d), `corr` is X^T (y - X b): |corr| = `level` on A and <= `level`
    off it; `barrier` is `BARRIER` on A and 0 off it.

    A prompt stops when its level reaches its target, or when a step fails numerically
    (`failed`; its level is then set to its target); a stopped prompt's state no longer changes.
    """

    rows: torch.Tensor
    coord: torch.Tensor
    used: torch.Tensor
    cols: torch.Tensor
    inverse: torch.Tensor
    b: torch.Tensor
    signs: torch.Tensor
    direction: torch.Tensor
    corr: torch.Tensor
    barrier: torch.Tensor
    level: torch.Tensor
    target: torch.Tensor
    failed: torch.Tensor

    @classmethod
    def start(cls, gram: torch.Tensor, xty: torch.Tensor, target: torch.Tensor, slots: int) -> _Path:
        """The path of every prompt whose target is below lambda_max = ||X^T y||_inf, at lambda_max."""
        level, first = xty.abs().max(-1)
        rows = torch.nonzero(level > target).squeeze(-1)
        first, corr = first[rows], xty[rows]
        r = len(rows)
        used = torch.zeros(r, slots, dtype=torch.bool, device=xty.device)
        used[:, 0] = True
        coord = torch.zeros(r, slots, dtype=torch.long, device=xty.device)
        coord[:, 0] = first
        cols = xty.new_zeros(r, slots, xty.shape[1])
        cols[:, 0] = gram[rows, first]
        inverse = xty.new_zeros(r, slots, slots)
        inverse[:, 0, 0] = 1 / _pick(cols[:, 0], first)
        signs = used * _pick(corr, first).sign().unsqueeze(-1)
        barrier = torch.nn.functional.one_hot(first, xty.shape[1]).to(xty.dtype) * BARRIER
        failed = torch.zeros_like(rows, dtype=torch.bool)
        return cls(
            rows, coord, used, cols, inverse, torch.zeros_like(signs), signs, inverse[:, :, 0] * signs[:, :1],
            corr.clone(), barrier, level[rows], target[rows], failed,
        )

    def select(self, keep: torch.Tensor) -> _Path:
        """The path of the prompts where the (R,) mask `keep` is set."""
        keep = keep.nonzero().squeeze(-1)
        return _Path(*(getattr(self, f.name).index_select(0, keep) for f in fields(self)))

    def solution(self, stopped: torch.Tensor, xty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch rows of the `stopped` prompts and their b (S, d).

        On A, b is M (X_A^T y - lambda s_A) at the target, with one step of iterative
        refinement against G_AA (M carries the round-off of its updates); where the path
        failed, it is the path's last point. Formed on every prompt of the path, then picked
        (no copies of M or of the Gram rows); G_AA b is G_A: b with b spread over the coordinates.
        """
        rhs = (xty[self.rows].gather(1, self.coord) - self.target.unsqueeze(-1) * self.signs) * self.used
        b = _matvec(self.inverse, rhs)  # zero on free slots, as M
        spread = self.b.new_zeros(len(b), xty.shape[1]).scatter_add_(1, self.coord, b)
        b += _matvec(self.inverse, rhs - _matvec(self.cols, spread))
        b = torch.where(self.failed.unsqueeze(-1), self.b, b)
        picked = stopped.nonzero().squeeze(-1)
        coord, b = self.coord.index_select(0, picked), b.index_select(0, picked)
        return self.rows.index_select(0, picked), xty.new_zeros(len(picked), xty.shape[1]).scatter_add_(1, coord, b)

    def widen(self, slots: int) -> None:
        """Room for `slots` active coordinates, the new slots free (the slot-sized work of an event grows with k:
        small active sets run on few slots)."""
        extra, pad = slots - self.used.shape[1], torch.nn.functional.pad  # pads with zeros (False)
        for name in ("coord", "used", "b", "signs", "direction"):
            setattr(self, name, pad(getattr(self, name), (0, extra)))
        self.cols = pad(self.cols, (0, 0, 0, extra))
        self.inverse = pad(self.inverse, (0, extra, 0, extra))

    def advance(self, gram: torch.Tensor, capacity: int) -> None:
        """Move every prompt to its next event: a join, a drop or its target (`gram` the batch's X^T X), with
        room for `capacity` active coordinates (min(n, d): more make X_A^T X_A singular)."""
        if self.used.shape[1] < capacity and bool(self.used[:, -1].any()):  # a prompt has no free slot left
            self.widen(min(2 * self.used.shape[1], capacity))
        slope = (self.direction.unsqueeze(-1) * self.cols).sum(-2)  # on the CPU faster than bmm for k < d
        # Off A, corr_j - gamma slope_j reaches +level - gamma at gamma = (level - corr_j) / (1 - slope_j)
        # and -level + gamma at (level + corr_j) / (1 + slope_j); the first join has the largest
        # positive reciprocal. The barrier keeps A out. A coordinate that has just left A
        # starts at corr = s level, where its zero root has a negative rate (its slope exceeds 1
        # in s), so it can only join later, at the other side.
        reach = self.level.unsqueeze(-1) + self.barrier
        rate, j_join = torch.maximum((1 - slope).div_(reach - self.corr), (1 + slope).div_(reach + self.corr)).max(-1)
        gamma_join = rate.clamp_(min=0).reciprocal_()
        # b_p crosses zero at -b_p / direction_p: not in a slot that has just joined (b_p is zero), nor in a free
        # slot (b_p and direction_p are zero: their ratio is NaN).
        cross = torch.div(self.b, self.direction).neg_()
        gamma_drop, q_drop = torch.where(cross > 1e-12 * self.level.unsqueeze(-1), cross, math.inf).min(-1)
        # The first event; on a tie the target comes first, then a join (torch.min returns the first minimum).
        gamma, event = torch.stack([self.level - self.target, gamma_join, gamma_drop]).min(0)
        step = gamma.unsqueeze(-1)
        self.b.addcmul_(step, self.direction)
        self.corr.addcmul_(step, slope, value=-1)
        self.level -= gamma
        # Rank-one updates of M. A join of j into free slot p adds w w^T / s with w = M G_Aj - e_p
        # and s = G_jj - G_Aj^T M G_Aj (the Schur complement); a drop from slot q subtracts
        # w w^T / w_q with w = M_q. M s then changes by (w^T s) w / s, or by -(w^T s) w / w_q
        # (s the signs after the join, before the drop).
        g_j = gram[self.rows, j_join]
        g_aj = g_j.gather(1, self.coord)  # any value on a free slot, where M is zero
        w = _matvec(self.inverse, g_aj)
        g_jj = _pick(g_j, j_join)
        schur = g_jj - (g_aj * w).sum(-1)
        free, p_join = (~self.used).max(-1)
        w.scatter_(1, p_join.unsqueeze(-1), -1.0)
        joins = event == 1
        regular = (schur > 1e-10 * g_jj) & free
        singular = joins & ~regular
        joins &= regular
        jr = joins.nonzero().squeeze(-1)
        if len(jr):
            jc, jp = j_join[jr], p_join[jr]
            self.used[jr, jp] = True
            self.coord[jr, jp] = jc
            self.cols[jr, jp] = g_j[jr]
            self.signs[jr, jp] = self.corr[jr, jc].sign()
            self.barrier[jr, jc] = BARRIER
        scaled = torch.where(joins, 1 / schur, 0.0).unsqueeze(-1) * w
        self.inverse.addcmul_(scaled.unsqueeze(-1), w.unsqueeze(-2))
        self.direction.addcmul_((w * self.signs).sum(-1, keepdim=True), scaled)
        dr = (event == 2).nonzero().squeeze(-1)
        if len(dr):  # in most events, but on a few prompts
            dq = q_drop[dr]
            w = self.inverse[dr, dq]
            scaled = (-1 / _pick(w, dq)).unsqueeze(-1) * w
            self.inverse.index_put_((dr,), scaled.unsqueeze(-1) * w.unsqueeze(-2), accumulate=True)
            # w^T s = (M s)_q, the direction at q
            self.direction.index_put_((dr,), self.direction[dr, dq].unsqueeze(-1) * scaled, accumulate=True)
            dc = self.coord[dr, dq]
            self.barrier[dr, dc] = 0.0
            self.corr[dr, dc] = self.signs[dr, dq] * self.level[dr]
            self.used[dr, dq] = False
            self.b[dr, dq] = 0.0
            self.direction[dr, dq] = 0.0
            self.inverse[dr, dq, :] = 0.0
            self.inverse[dr, :, dq] = 0.0
        self.failed |= singular | self.level.isnan()
        self.level = torch.where(self.failed, self.target, self.level)


def homotopy(
    x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor, max_events: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lasso solution per prompt by the homotopy (LARS-lasso) path alone, in float64, lambda > 0.

    Batched: from lambda_max = ||X^T y||_inf, where b = 0, the penalty falls to its
    target while b stays the solution, b_A(lambda) = (X_A^T X_A)^-1 (X_A^T y - lambda s_A);
    a coordinate joins the active set A when its correlation |x_j^T (y - X b)| reaches
    lambda and leaves it when b_j crosses zero. The inverse of X_A^T X_A follows A by
    rank-one updates, in as many slots as the largest active set needs (`FIRST_SLOTS`,
    doubled as needed up to min(n, d)). Returns b (B, d) and a (B,) mask of the prompts whose path failed,
    numerically (a nearly singular X_A^T X_A) or by not reaching the target within
    `max_events` events; their b is the path's last point.
    """
    x, y = _checked(x, y)
    target = penalties(lam, x.shape[0], x).squeeze(-1)
    if bool((target <= 0).any()):
        raise ValueError("the exact lasso solution needs lambda > 0 (with lambda = 0 use least squares)")
    with torch.inference_mode():  # about a hundred small operations an event: no autograd bookkeeping
        gram, xty = x.mT @ x, _matvec(x.mT, y)
        b = torch.zeros_like(xty)
        failed = torch.zeros_like(target, dtype=torch.bool)
        capacity = min(x.shape[1:])
        path = _Path.start(gram, xty, target, min(capacity, FIRST_SLOTS))
        for event in range(max_events + 1):
            done = path.level <= path.target
            if event == max_events:  # the prompts still on their way fail
                path.failed |= ~done
                done = torch.ones_like(done)
            stopped = int(done.sum())
            if stopped == len(done) or stopped >= max(len(done) // 2, 64):  # stopped prompts leave in groups
                rows, solved = path.solution(done, xty)
                b[rows], failed[rows] = solved, path.failed[done]
                path = path.select(~done)
            if len(path.rows) == 0:
                break
            path.advance(gram, capacity)
    return b.clone(), failed.clone()  # ordinary tensors again


def lasso_exact(x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor, tol: float = GAP_TOL) -> torch.Tensor:
    """The minimiser b of the lasso objective per prompt, in float64 (B, d), lambda > 0.

    The `homotopy` solution, then `_refine` for any prompt whose duality gap is above
    `tol` times half of ||y||² (on the suite's data, none is).
    """
    x, y = _checked(x, y)
    b, _ = homotopy(x, y, lam)
    return _refine(x, y, penalties(lam, x.shape[0], x).squeeze(-1), b, tol)


def _refine(
    x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, b: torch.Tensor, tol: float, rounds: int = 12
) -> torch.Tensor:
    """`b` with every duality gap below `tol` times half of ||y||².

    Prompts above it (where the homotopy failed: a nearly singular active set, or too many
    events) get rounds of FISTA from their point (50, 100, 200, ... steps), each
    followed by an active-set solve on the support and signs reached, keeping the point
    of smaller gap.
    """
    threshold = tol * 0.5 * (y**2).sum(-1)
    todo = torch.nonzero(~(duality_gap(x, y, b, lam) <= threshold)).squeeze(-1)
    for k in range(rounds):
        if todo.numel() == 0:
            return b
        sub = LassoProblem.of(x[todo], y[todo], lam[todo])
        *_, fista = sub.iterates(50 * 2**k, accelerated=True, start=torch.nan_to_num(b[todo], 0.0, 0.0, 0.0))
        solved = _active_solve(sub, fista != 0, sub.xty - sub.lam * fista.sign())
        gaps = [duality_gap(x[todo], y[todo], p, lam[todo]) for p in (fista, solved)]
        better = gaps[1] < gaps[0]
        b[todo] = torch.where(better.unsqueeze(-1), solved, fista)
        todo = todo[~(torch.where(better, gaps[1], gaps[0]) <= threshold[todo])]
    raise RuntimeError(
        f"lasso_exact: {todo.numel()} prompts (first: {int(todo[0])}) have a duality gap above {tol:g} x (1/2)||y||^2"
    )


@lru_cache(maxsize=1)
def tuned_lambdas() -> dict[str, dict[int, float]]:
    """The tuned penalty of every lasso task at every prompt length, {task: {n: lambda}}, from `LAMBDA_FILE`."""
    try:
        table = json.loads(LAMBDA_FILE.read_text())["lambda"]
        return {task: {int(n): float(lam) for n, lam in by_length.items()} for task, by_length in table.items()}
    except (OSError, KeyError, AttributeError, ValueError) as exc:
        raise RuntimeError(f"cannot read the tuned lasso penalties from {LAMBDA_FILE}: {exc}") from exc


def is_lasso(spec: TaskSpec) -> bool:
    """Whether a task's problem is a sparse regression, solved with a tuned penalty: the lasso family and Garg et
    al.'s sparse linear regression (`garg/sparse-linear`)."""
    return spec.family == "lasso" or (spec.family == "garg" and spec.params["function"] == "sparse-linear")


def lasso_lambda(spec: TaskSpec, n: int) -> float:
    """The lasso penalty tuned for task `spec` at prompt length n."""
    try:
        return tuned_lambdas()[spec.name][n]
    except KeyError:
        raise ValueError(
            f"no tuned lasso penalty for task {spec.name!r} at prompt length {n} in {LAMBDA_FILE}"
        ) from None


class ISTA(Model):
    """ISTA from b = 0 for `ITERATIONS` steps: lasso with the tuned penalty, least squares (lambda = 0) on linear."""

    name = "ista"
    accelerated = False
    iterations = ITERATIONS

    def supports(self, task: TaskSpec) -> bool:
        return is_lasso(task) or task.family == "linear"

    def predict(self, batch: Batch) -> Prediction:
        lam = lasso_lambda(batch.task, batch.n) if is_lasso(batch.task) else 0.0
        problem, query, basis = LassoProblem.of(batch.x, batch.y, lam), batch.x_query.double(), None
        if lam == 0:  # least squares: in the eigenbasis, every step is elementwise
            problem, basis = problem.eigenbasis()
            query = query @ basis
        recent = problem.xty.new_empty(batch.x.shape[0], STEP_BLOCK, batch.task.d)  # the only float64 path buffer
        steps = batch.x.new_empty(batch.x.shape[0], self.iterations, query.shape[1])
        for k, b in enumerate(problem.iterates(self.iterations, self.accelerated, out=recent), 1):
            if k % STEP_BLOCK == 0 or k == self.iterations:
                first = (k - 1) // STEP_BLOCK * STEP_BLOCK
                steps[:, first:k] = recent[:, : k - first] @ query.mT
        w = b if basis is None else (basis @ b.unsqueeze(-1)).squeeze(-1)
        return Prediction(steps[:, -1], steps, w.to(batch.x.dtype).contiguous())


class FISTA(ISTA):
    """FISTA (accelerated ISTA) from b = 0 for `ITERATIONS` steps."""

    name = "fista"
    accelerated = True


class LassoExact(Model):
    """The exact lasso solution with the tuned penalty (duality gap below `GAP_TOL`): the converged reference."""

    name = "lasso-exact"

    def supports(self, task: TaskSpec) -> bool:
        return is_lasso(task)

    def predict(self, batch: Batch) -> Prediction:
        b = lasso_exact(batch.x, batch.y, lasso_lambda(batch.task, batch.n))
        y = _matvec(batch.x_query.double(), b)
        return Prediction(y.to(batch.x.dtype), w=b.to(batch.x.dtype))
