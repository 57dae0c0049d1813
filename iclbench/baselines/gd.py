"""Gradient descent from 0 on the prompt, with a constant step size tuned per task and prompt length.

Linear tasks: least squares, w <- w - eta X^T (X w - y) / n. Autoregressive tasks (vector labels
y_t = x_{t+1}): least squares on W, sum_t ||y_t - W x_t||^2 / (2n), W <- W - eta (W X^T X - Y^T X) / n
from W = 0, prediction W x_query; the first step, W_1 = (eta / n) sum_t x_{t+1} x_t^T, is the
mesa-optimizer's one GD step. Logistic tasks: the mean
logistic loss plus (mu / 2) ||w||^2, prediction the logit x_query^T w. Kernel tasks:
functional GD in the RKHS of the task's kernel, f <- f + (eta / n) sum_i (y_i - f(x_i)) K(x_i, .)
from f = 0, kept as coefficients alpha over the context points (f = sum_i alpha_i K(x_i, .)).

Every gradient is a mean over the n context pairs (the kernel update is the formula of
Cheng et al. with step eta / n), so eta is on the same scale at every prompt length. The
curvature still changes with n (for Gaussian x, lambda_max(X^T X / n) is about
(1 + sqrt(d / n))^2), so one step cannot be both fast at the nominal length and stable over
`BUDGET` steps at the shortest: eta is tuned per task *and* prompt length by
`iclbench.baselines.tune_gd`, and stored with its seed and procedure in `gd_steps.json`.

On the quadratic losses (linear, ar, kernel) every step's prediction comes from GD's closed form,
from one eigendecomposition per prompt (`Quadratic`): the step-by-step updates' numbers to round-off
(within 1e-11 of a prompt's largest prediction in float64, tested against them over the whole budget).
The logistic loss has no closed form: its steps are run one after another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from iclbench import Batch, Model, Prediction, TaskSpec
from iclbench.kernels import gram

BUDGET = 1024
"""Steps run (and reported in `Prediction.steps`): enough to show GD's O(kappa) convergence."""

FAMILIES = ("linear", "logistic", "kernel", "ar")
STEP_BLOCK = 32
"""`Quadratic.steps` makes the predictions of the steps a + 1 .. a + STEP_BLOCK from those at step a."""
CHUNK_ELEMENTS = 2**19
"""`Quadratic.steps` makes about this many predictions at a time (4 MiB in float64): temporaries this small
are reused by the allocator, where larger ones are mapped afresh, and page-faulted, every time."""
STEP_SIZES_FILE = Path(__file__).with_name("gd_steps.json")


def load_step_sizes(path: Path = STEP_SIZES_FILE) -> dict[str, dict[int, float]]:
    """The tuned step sizes, {task name: {prompt length: eta}}."""
    table = json.loads(path.read_text())["step_sizes"]
    return {task: {int(n): float(eta) for n, eta in by_length.items()} for task, by_length in table.items()}


def powers(t: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log|1 - t| (..., d, 1) and the signs of (1 - t)^k (..., d, S), for t (..., d) and step counts k (S,).

    log1p(-t) for t < 1 (exact as t -> 0); log 0 (t = 1) is the most negative float, so that 0^0 = 1;
    a base 1 - t < 0 (t > 1, an oscillating mode) has sign (-1)^k.
    """
    t = t.unsqueeze(-1)
    log_base = torch.where(t < 1, torch.log1p(-t), torch.log(t - 1)).clamp(min=torch.finfo(t.dtype).min)
    signs = 1 - 2 * ((t > 1) & (k.remainder(2) == 1)).to(t.dtype)
    return log_base, signs


def geometric_sums(t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """S_k(t) = sum_{i<k} (1 - t)^i = (1 - (1 - t)^k) / t for t (..., d) and step counts k (S,): (..., d, S).

    Exact to round-off at every t: 1 - (1 - t)^k = (1 - s) - s expm1(k log|1 - t|) with s the sign of
    (1 - t)^k (no cancellation as t -> 0, or for s = -1), and S_k(0) = k. Diverging modes (t > 2,
    or t < 0) grow as sequential updates would.
    """
    log_base, signs = powers(t, k)
    numerator = (1 - signs) - signs * torch.expm1(log_base * k)
    t = t.unsqueeze(-1)
    return torch.where(t == 0, k, numerator / t)


@dataclass(frozen=True)
class Quadratic:
    """GD from W = 0 on tr(W H W^T) / 2 - tr(R W^T), W <- W - eta (W H - R), read out on a query, by its closed form.

    With H = V diag(lambda) V^T and t = eta lambda, after k steps W_k = R V diag(eta S_k(t)) V^T
    (S_k = `geometric_sums`), so the predictions W_k x for the x of the query are sums over the modes j
    of `modes` (x^T V)_j (R V)_j times eta S_k(t_j): one eigendecomposition per prompt (`of`) serves every
    step and every step size. `lam` (B, d) holds the eigenvalues, `v` (B, d, d) the eigenvectors,
    `right` (B, m, d) R V and `modes` (B, q, m, d).
    """

    lam: torch.Tensor
    v: torch.Tensor
    right: torch.Tensor
    modes: torch.Tensor

    @classmethod
    def of(cls, hess: torch.Tensor, rhs: torch.Tensor, query: torch.Tensor) -> Quadratic:
        """H (B, d, d) symmetric, R (B, m, d) and the query's points (B, q, d)."""
        lam, v = torch.linalg.eigh(hess)
        left, right = query @ v, rhs @ v
        return cls(lam, v, right, left.unsqueeze(2) * right.unsqueeze(1))

    def after(self, eta: float, k: int) -> torch.Tensor:
        """The predictions (B, q, m) after k steps of size eta."""
        steps = torch.tensor([k], dtype=self.lam.dtype, device=self.lam.device)
        return torch.einsum("bqmd,bd->bqm", self.modes, eta * geometric_sums(eta * self.lam, steps)[..., 0])

    def steps(self, eta: float, budget: int, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictions after each of `budget` steps of size eta (B, budget, q, m) in `dtype` (default H's), and
        W (B, m, d) after the last.

        Step k = a + j, with a a multiple of `STEP_BLOCK` and j = 1 .. STEP_BLOCK, is made by
        S_{a+j} = S_a + (1 - t)^a S_j: every factor is a closed form, so the round-off does not grow
        with k; the transcendental functions run on budget / STEP_BLOCK + STEP_BLOCK values per mode, and
        the predictions come from one (budget / STEP_BLOCK, d) by (d, STEP_BLOCK q m) product per prompt.
        Groups of prompts are made one after another, `CHUNK_ELEMENTS` predictions at a time.
        """
        b, q, m, d = self.modes.shape
        block = min(budget, STEP_BLOCK)
        blocks = -(-budget // block)
        k = torch.arange(blocks * block + 1, dtype=self.lam.dtype, device=self.lam.device)
        steps = self.lam.new_empty(b, blocks, block, q * m, dtype=dtype)
        group = max(1, CHUNK_ELEMENTS // (blocks * block * q * m))
        for first in range(0, b, group):
            rows = slice(first, first + group)
            steps[rows] = _blocks(eta * self.lam[rows], eta * self.modes[rows].flatten(1, 2), k, block)
        last = eta * geometric_sums(eta * self.lam, k[budget : budget + 1]).squeeze(-1)
        return steps.view(b, blocks * block, q, m)[:, :budget], (self.right * last.unsqueeze(-2)) @ self.v.mT


def _blocks(t: torch.Tensor, modes: torch.Tensor, k: torch.Tensor, block: int) -> torch.Tensor:
    """`Quadratic.steps` for a group of G prompts: t = eta lambda (G, d), modes times eta (G, c, d), the step counts
    k = 0 .. A block; the predictions (G, A, block, c), in float64."""
    starts = k[: len(k) - 1 : block]  # a = 0, block, 2 block, ...
    log_base, signs = powers(t, starts)
    powers_at = (signs * torch.exp(log_base * starts)).mT  # (1 - t)^a (G, A, d)
    at_starts = (modes @ geometric_sums(t, starts)).mT.unsqueeze(2)  # the predictions at the steps a (G, A, 1, c)
    within = (geometric_sums(t, k[1 : block + 1]).unsqueeze(-1) * modes.mT.unsqueeze(-2)).flatten(2)  # (G, d, j c)
    return (powers_at @ within).view(len(t), -1, block, modes.shape[1]).add_(at_starts)


def least_squares_loss(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> Quadratic:
    """||X w - y||^2 / (2n) for y (B, n), or sum_t ||y_t - W x_t||^2 / (2n) for y (B, n, m):
    H = X^T X / n, R = Y^T X / n."""
    n = x.shape[1]
    labels = y if y.dim() == 3 else y.unsqueeze(-1)
    return Quadratic.of(x.mT @ x / n, labels.mT @ x / n, x_query)


def least_squares(
    x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, eta: float, budget: int, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """GD on ||X w - y||^2 / (2n) from 0: predictions (B, budget, q) after each step and the last w (B, d).

    Vector labels y (B, n, m): GD on sum_t ||y_t - W x_t||^2 / (2n) from W = 0, predictions
    (B, budget, q, m) and the last W (B, m, d). The predictions are stored in `dtype` (default x's):
    rounded as a cast of the whole would round them, without a full-precision copy.
    """
    steps, w = least_squares_loss(x, y, x_query).steps(eta, budget, dtype)
    return (steps, w) if y.dim() == 3 else (steps.squeeze(-1), w.squeeze(-2))


def logistic(
    x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, eta: float, mu: float, budget: int,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GD on mean_i log(1 + exp(-y_i x_i^T w)) + (mu / 2) ||w||^2 from 0: logits (B, budget, q) in `dtype`
    (default x's) and the last w.

    Sequential (no closed form): w <- (1 - eta mu) w + (eta / n) X^T (y sigmoid(-y X w)). The points are
    held feature-major, (d, B, n + q), so that X w (with the query's logits) and X^T s are each a
    product and a sum over a contiguous axis, about three times faster than batched (n, d) matrix-vector
    products; a step is nine operations into buffers made once.
    """
    n, d = x.shape[1], x.shape[2]
    points = torch.cat([x, x_query], dim=1).permute(2, 0, 1).contiguous()  # (d, B, n + q)
    context, labels = points[:, :, :n], y.to(x.dtype)
    neg_labels, scaled_labels = -labels, (eta / n) * labels
    w = x.new_zeros(d, x.shape[0])
    products = torch.empty_like(points)
    margins = x.new_zeros(x.shape[0], points.shape[2])  # X w and the query's logits
    weights = torch.empty_like(labels)
    grad = torch.empty_like(w)
    steps = x.new_empty(x.shape[0], budget, x_query.shape[1], dtype=dtype)
    for k in range(budget):
        torch.mul(margins[:, :n], neg_labels, out=weights).sigmoid_().mul_(scaled_labels)  # (eta / n) y sigmoid(-y X w)
        torch.sum(torch.mul(context, weights, out=products[:, :, :n]), -1, out=grad)
        torch.add(grad, w, alpha=1 - eta * mu, out=w)
        torch.sum(torch.mul(points, w.unsqueeze(-1), out=products), 0, out=margins)
        steps[:, k] = margins[:, n:]
    return steps, w.T


def functional_loss(k_context: torch.Tensor, k_query: torch.Tensor, y: torch.Tensor) -> Quadratic:
    """Functional GD's loss in the coefficients alpha (f = sum_i alpha_i K(x_i, .)): H = K / n, R = y^T / n."""
    n = k_context.shape[-1]
    return Quadratic.of(k_context / n, y.unsqueeze(-2) / n, k_query)


def functional(
    k_context: torch.Tensor, k_query: torch.Tensor, y: torch.Tensor, eta: float, budget: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Functional GD from f = 0 given the context Gram (B, n, n) and query kernel (B, q, n): (B, budget, q) in
    `dtype` (default y's).

    alpha <- alpha + (eta / n) (y - K alpha), and f(x_query) = k_query alpha.
    """
    return functional_loss(k_context, k_query, y).steps(eta, budget, dtype)[0].squeeze(-1)


def _check_family(spec: TaskSpec) -> None:
    if spec.family not in FAMILIES:
        raise ValueError(f"gradient descent: task {spec.name} has family {spec.family!r}, expected one of {FAMILIES}")


def quadratic_loss(batch: Batch) -> Quadratic:
    """The loss GD runs on (float64) on the quadratic families: least squares (linear, ar), functional GD (kernel)."""
    _check_family(batch.task)
    x, y, x_query = batch.x.double(), batch.y.double(), batch.x_query.double()
    if batch.task.family == "kernel":
        kind = batch.task.params["kernel"]
        return functional_loss(gram(x, x, kind), gram(x_query, x, kind), y)
    return least_squares_loss(x, y, x_query)


def descend(
    batch: Batch, eta: float, budget: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GD on the batch's task, in float64: predictions (B, budget, q[, m]) after each step, stored in `dtype`,
    and w (linear and ar only, float64)."""
    _check_family(batch.task)
    if not eta > 0 or budget < 1:
        raise ValueError(f"gradient descent: need a step size > 0 and a budget >= 1, got eta={eta}, budget={budget}")
    family = batch.task.family
    if family == "logistic":
        x, y, x_query = batch.x.double(), batch.y.double(), batch.x_query.double()
        return logistic(x, y, x_query, eta, batch.task.params["mu"], budget, dtype)[0], None
    steps, w = quadratic_loss(batch).steps(eta, budget, dtype)
    if family == "kernel":
        return steps.squeeze(-1), None
    return (steps, w) if family == "ar" else (steps.squeeze(-1), w.squeeze(-2))


def final_predictions(batch: Batch, etas: Sequence[float], budget: int) -> Iterator[torch.Tensor]:
    """The predictions (B, q[, m]) after `budget` steps for each step size of `etas`, in float64: one
    eigendecomposition for all of them on the quadratic families."""
    if batch.task.family == "logistic":
        yield from (descend(batch, eta, budget)[0][:, -1] for eta in etas)
        return
    loss = quadratic_loss(batch)
    for eta in etas:
        pred = loss.after(eta, budget)
        yield pred if batch.task.family == "ar" else pred.squeeze(-1)


class GradientDescent(Model):
    """`BUDGET` steps of GD from 0 with the step size tuned for the task and prompt length.

    Only tasks and lengths with a tuned step size (`gd_steps.json`) are supported.
    """

    name = "gd"

    def __init__(self) -> None:
        self.step_sizes = load_step_sizes()

    def supports(self, task: TaskSpec) -> bool:
        return task.family in FAMILIES and task.name in self.step_sizes

    def supports_length(self, task: TaskSpec, n: int) -> bool:
        return n in self.step_sizes.get(task.name, {})

    def step_size(self, task: TaskSpec, n: int) -> float:
        try:
            return self.step_sizes[task.name][n]
        except KeyError:
            raise ValueError(
                f"gd: no tuned step size for task {task.name!r} at prompt length {n} in {STEP_SIZES_FILE.name}; "
                "tune one with python -m iclbench.baselines.tune_gd --write"
            ) from None

    def predict(self, batch: Batch) -> Prediction:
        dtype = batch.x.dtype
        steps, w = descend(batch, self.step_size(batch.task, batch.n), BUDGET, dtype)
        return Prediction(steps[:, -1], steps=steps, w=None if w is None else w.to(dtype))
