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
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from iclbench import Batch, Model, Prediction, TaskSpec
from iclbench.kernels import gram

BUDGET = 1024
"""Steps run (and reported in `Prediction.steps`): enough to show GD's O(kappa) convergence."""

FAMILIES = ("linear", "logistic", "kernel", "ar")
STEP_SIZES_FILE = Path(__file__).with_name("gd_steps.json")


def load_step_sizes(path: Path = STEP_SIZES_FILE) -> dict[str, dict[int, float]]:
    """The tuned step sizes, {task name: {prompt length: eta}}."""
    table = json.loads(path.read_text())["step_sizes"]
    return {task: {int(n): float(eta) for n, eta in by_length.items()} for task, by_length in table.items()}


def least_squares(
    x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, eta: float, budget: int, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """GD on ||X w - y||^2 / (2n) from 0: predictions (B, budget, q) after each step and the last w (B, d).

    Vector labels y (B, n, m): GD on sum_t ||y_t - W x_t||^2 / (2n) from W = 0, predictions
    (B, budget, q, m) and the last W (B, m, d). The predictions are stored in `dtype` (default x's) as
    each step makes them: rounded as a cast of the whole would round them, without a full-precision copy.
    """
    n = x.shape[1]
    hess = x.mT @ x / n
    if y.dim() == 2:
        xty, update, apply = "bnd,bn->bd", "bij,bj->bi", "bqd,bd->bq"
    else:
        xty, update, apply = "bnd,bnm->bmd", "bij,bmj->bmi", "bqd,bmd->bqm"
    xty = torch.einsum(xty, x, y) / n
    w = torch.zeros_like(xty)
    steps = x.new_empty(x.shape[0], budget, *torch.einsum(apply, x_query, w).shape[1:], dtype=dtype)
    for k in range(budget):
        w = w - eta * (torch.einsum(update, hess, w) - xty)
        steps[:, k] = torch.einsum(apply, x_query, w)
    return steps, w


def logistic(
    x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, eta: float, mu: float, budget: int,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GD on mean_i log(1 + exp(-y_i x_i^T w)) + (mu / 2) ||w||^2 from 0: logits (B, budget, q) in `dtype`
    (default x's) and the last w."""
    n = x.shape[1]
    w = x.new_zeros(x.shape[0], x.shape[2])
    steps = x.new_empty(x.shape[0], budget, x_query.shape[1], dtype=dtype)
    for k in range(budget):
        p = torch.sigmoid(-y * torch.einsum("bnd,bd->bn", x, w))
        grad = -torch.einsum("bnd,bn->bd", x, y * p) / n + mu * w
        w = w - eta * grad
        steps[:, k] = torch.einsum("bqd,bd->bq", x_query, w)
    return steps, w


def functional(
    k_context: torch.Tensor, k_query: torch.Tensor, y: torch.Tensor, eta: float, budget: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Functional GD from f = 0 given the context Gram (B, n, n) and query kernel (B, q, n): (B, budget, q) in
    `dtype` (default y's).

    alpha <- alpha + (eta / n) (y - K alpha), and f(x_query) = k_query alpha.
    """
    n = k_context.shape[-1]
    alpha = torch.zeros_like(y)
    steps = y.new_empty(y.shape[0], budget, k_query.shape[1], dtype=dtype)
    for k in range(budget):
        alpha = alpha + (eta / n) * (y - torch.einsum("bij,bj->bi", k_context, alpha))
        steps[:, k] = torch.einsum("bqn,bn->bq", k_query, alpha)
    return steps


def descend(
    batch: Batch, eta: float, budget: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GD on the batch's task, in float64: predictions (B, budget, q[, m]) after each step, stored in `dtype`,
    and w (linear and ar only, float64)."""
    spec = batch.task
    if spec.family not in FAMILIES:
        raise ValueError(f"gradient descent: task {spec.name} has family {spec.family!r}, expected one of {FAMILIES}")
    if not eta > 0 or budget < 1:
        raise ValueError(f"gradient descent: need a step size > 0 and a budget >= 1, got eta={eta}, budget={budget}")
    x, y, x_query = batch.x.double(), batch.y.double(), batch.x_query.double()
    if spec.family in ("linear", "ar"):
        return least_squares(x, y, x_query, eta, budget, dtype)
    if spec.family == "logistic":
        return logistic(x, y, x_query, eta, spec.params["mu"], budget, dtype)[0], None
    kind = spec.params["kernel"]
    return functional(gram(x, x, kind), gram(x_query, x, kind), y, eta, budget, dtype), None


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
