"""Baselines of the select family (algorithm selection): the Bayes predictor, and the best single ridge.

`select-bayes` is exact and uses nothing hidden, a reference line: on select/noise-mix, the posterior mean
under the task's prior with the noise level unknown, sum_s p(s | prompt) ridge_s, each ridge_s at the penalty
d s^2 and p(s | prompt) proportional to the Gaussian likelihood N(y; 0, X X^T / d + s^2 I) (the levels
equally likely a priori); on select/reg-cls, the prompt's kind read off its labels (all in {-1, 1}: a
classification prompt; a regression prompt's labels are continuous, so the test errs with probability 0),
then ridge at the Bayes penalty noise^2 (prior N(0, I)) or the mu-regularised logistic optimum, which is the
classification target itself. `noise-oracle` (`iclbench.baselines.oracles`) knows each prompt's level.

`ridge-fixed` is ridge with one penalty per task and prompt length for every prompt, tuned on the training
stream (`iclbench.baselines.tune_ridge`): the best algorithm that does not select, which a model that selects
must beat.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import torch

from iclbench import Batch, Model, Prediction, TaskSpec
from iclbench.baselines.ridge import apply, solve
from iclbench.solvers import logistic_optimum

PENALTY_FILE = Path(__file__).with_name("ridge_fixed_lambda.json")


def level_posterior(x: torch.Tensor, y: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """p(s | prompt) (B, L) for each noise level s of `levels` (L,), equally likely a priori, under
    y = x^T w + s eps with w ~ N(0, I / d): y ~ N(0, X X^T / d + s^2 I), in float64."""
    x, y = x.double(), y.double()
    n, d = x.shape[1], x.shape[2]
    gram = x @ x.mT / d
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    cov = gram.unsqueeze(1) + (levels.to(x) ** 2)[None, :, None, None] * eye  # (B, L, n, n)
    low = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(low, y[:, None, :, None].expand(-1, len(levels), -1, -1), upper=False)
    loglik = -0.5 * (z**2).sum((-2, -1)) - torch.log(torch.diagonal(low, dim1=-2, dim2=-1)).sum(-1)
    return torch.softmax(loglik, -1)


def is_classification(y: torch.Tensor) -> torch.Tensor:
    """(B,) whether every label of a prompt is -1 or 1: the classification prompts of select/reg-cls."""
    return (y.abs() == 1).all(-1)


class SelectBayes(Model):
    """The Bayes-optimal predictor of the select tasks, from the prompt alone (module docstring)."""

    name = "select-bayes"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "select"

    def predict(self, batch: Batch) -> Prediction:
        if not self.supports(batch.task):
            raise ValueError(f"{self.name}: task {batch.task.name} is not a select task")
        spec, x, y = batch.task, batch.x.double(), batch.y.double()
        if spec.params["mode"] == "noise":
            levels = torch.tensor(spec.params["noise_levels"], dtype=torch.float32).to(x)  # the data's float32 levels
            post = level_posterior(x, y, levels)
            fits = torch.stack([solve(x, y, spec.d * float(s) ** 2) for s in levels], 1)  # (B, L, d)
            w = torch.einsum("bl,bld->bd", post, fits)
        else:
            cls = is_classification(y)
            w = solve(x, y, spec.noise**2)
            if cls.any():
                w[cls] = logistic_optimum(x[cls], y[cls], spec.params["mu"])
        return Prediction(apply(batch.x_query.double(), w).to(batch.x.dtype), w=w.to(batch.x.dtype))


class RidgeFixed(Model):
    """Ridge with one penalty per task and prompt length for every prompt (`PENALTY_FILE`, `tune_ridge`)."""

    name = "ridge-fixed"

    @cached_property
    def penalties(self) -> dict[str, dict[int, float]]:
        stored = json.loads(PENALTY_FILE.read_text())["lambda"]
        return {task: {int(n): lam for n, lam in by_length.items()} for task, by_length in stored.items()}

    def supports(self, task: TaskSpec) -> bool:
        return task.name in self.penalties

    def supports_length(self, task: TaskSpec, n: int) -> bool:
        return n in self.penalties.get(task.name, {})

    def predict(self, batch: Batch) -> Prediction:
        if not self.supports_length(batch.task, batch.n):
            raise ValueError(f"{self.name}: no tuned penalty for {batch.task.name} at n={batch.n}")
        w = solve(batch.x, batch.y, self.penalties[batch.task.name][batch.n])
        return Prediction(apply(batch.x_query.double(), w).to(batch.x.dtype), w=w.to(batch.x.dtype))
