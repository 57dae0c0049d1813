"""Scores of one task at one prompt length, with bootstrap intervals over prompts."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from iclbench.tasks import EvalSet, TaskSpec

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.90
DB_FLOOR = 1e-30
"""Values below this are reported at its level (-300 dB): exact solvers reach round-off."""

RECOVERY_FAMILIES = ("linear", "lasso", "ar")
"""Families whose hidden `w` is the parameter in y = x^T w (y = W x, `w` (P, m, d), for vector labels),
scored against a returned `w`."""


def db(value: float) -> float:
    """10 log10(value), floored at `DB_FLOOR`."""
    return 10.0 * math.log10(max(value, DB_FLOOR))


@lru_cache(maxsize=8)
def _counts(n_prompts: int) -> np.ndarray:
    """(resamples, prompts) multiplicities of a fixed-seed bootstrap over prompts."""
    rng = np.random.Generator(np.random.PCG64(BOOTSTRAP_SEED))
    idx = rng.integers(0, n_prompts, size=(BOOTSTRAP_RESAMPLES, n_prompts))
    flat = idx + n_prompts * np.arange(BOOTSTRAP_RESAMPLES)[:, None]
    return np.bincount(flat.ravel(), minlength=BOOTSTRAP_RESAMPLES * n_prompts).reshape(BOOTSTRAP_RESAMPLES, -1).astype(np.float64)


def interval(samples: np.ndarray) -> np.ndarray:
    """The `CI_LEVEL` percentile interval of bootstrap replicates along the last axis: (..., 2)."""
    tail = (1 - CI_LEVEL) / 2
    return np.moveaxis(np.quantile(samples, [tail, 1 - tail], axis=-1), 0, -1)


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = interval(samples)
    return [float(lo), float(hi)]


def replicates(num: torch.Tensor, den: torch.Tensor) -> np.ndarray:
    """The (BOOTSTRAP_RESAMPLES,) bootstrap replicates of sum(num) / sum(den) over prompts (dimension 0; for
    (P, k) tensors, (BOOTSTRAP_RESAMPLES, k): k ratios at once). Every replicate draws the same prompts for
    every model scored on a task (a fixed seed), so two models' replicates are paired: their difference,
    replicate by replicate, is the paired bootstrap of the difference."""
    num_np, den_np = num.double().cpu().numpy(), den.double().cpu().numpy()
    counts = _counts(len(num_np))
    return (counts @ num_np) / (counts @ den_np)


def ratio(num: torch.Tensor, den: torch.Tensor) -> dict[str, Any]:
    """sum(num) / sum(den) over prompts, in dB too, with its bootstrap interval."""
    value = float(num.double().cpu().numpy().sum() / den.double().cpu().numpy().sum())
    lo, hi = _interval(replicates(num, den))
    return {"value": value, "db": db(value), "ci90": [lo, hi], "ci90_db": [db(lo), db(hi)]}


def db_array(values: np.ndarray) -> np.ndarray:
    """`db`, element-wise."""
    return 10.0 * np.log10(np.maximum(values, DB_FLOOR))


def db_difference(err_a: torch.Tensor, err_b: torch.Tensor, energy: torch.Tensor) -> dict[str, Any]:
    """The paired difference of two models' relative errors on the same prompts, in dB:
    db(sum err_a / sum energy) - db(sum err_b / sum energy), with its bootstrap interval
    (each resample of prompts applied to both models)."""
    a, b, e = (t.double().cpu().numpy() for t in (err_a, err_b, energy))
    lo, hi = _interval(db_array(replicates(err_a, energy)) - db_array(replicates(err_b, energy)))
    return {"db": db(float(a.sum() / e.sum())) - db(float(b.sum() / e.sum())), "ci90_db": [lo, hi]}


def mean(values: torch.Tensor) -> dict[str, Any]:
    """Mean over prompts with its bootstrap interval."""
    v = values.double().cpu().numpy()
    return {"value": float(v.mean()), "ci90": _interval(_counts(len(v)) @ v / len(v))}


def squared_errors(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt, the squared error summed over queries (and a vector label's coordinates) and the
    target's energy sum(target^2), in float64, from (P, q) or (P, q, m) tensors."""
    pred, target = pred.double().flatten(1), target.double().flatten(1)
    return ((pred - target) ** 2).sum(-1), (target**2).sum(-1)


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """E[||pred - target||^2] / E[||target||^2] over prompts and queries (the zero predictor scores 1)."""
    return ratio(*squared_errors(pred, target))


def steps_to_reach(curve: list[float] | None, level: float | None) -> int | None:
    """The first step (1-based) of a per-step error curve whose error is at most `level` dB; None when never reached."""
    if curve is None or level is None:
        return None
    return next((k for k, v in enumerate(curve, 1) if v <= level), None)


STEP_ERRORS_BLOCK = 1 << 18
"""Most squared errors `StepErrors` holds in float64 at once (2 MiB)."""


def first_non_finite(t: torch.Tensor) -> int | None:
    """The index along the first dimension of the first entry of `t` that holds a NaN or an infinity; None when
    every value is finite (found in one pass, `aminmax`, which NaN and infinities show through)."""
    if not t.numel():
        return None
    lo, hi = (float(v) for v in t.aminmax())
    if math.isfinite(lo) and math.isfinite(hi):
        return None
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(-1)
    return int(bad.nonzero()[0, 0])


class StepErrors:
    """The squared error of each step of a model's `steps`, summed over prompts, queries and label coordinates
    in float64, accumulated as chunks of consecutive prompts arrive, so that memory does not grow with
    prompts x steps x queries.

    `total()` is, bit for bit, the sum at once of the (P, K, q[, m]) squared errors over every dimension but
    the steps' (torch, single-threaded): each prompt's sum over its outputs, those sums added prompt after
    prompt in order; with one output per step, torch's sum over prompts of the (P, K) errors; with one step,
    torch's sum of every squared error. Only these last two keep a (P, K) or (P, q[, m]) buffer.
    Each chunk is read once more (`aminmax`), for `largest` and `first_bad`.
    """

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target.double()
        """(P, q[, m]) the noiseless target of every prompt."""
        self.done = 0
        self.largest = 0.0
        """The largest magnitude among the finite chunks of steps added."""
        self.first_bad: int | None = None
        """The first prompt whose steps hold a NaN or an infinity (None: none so far)."""
        self._sum: torch.Tensor | None = None
        self._parts: list[torch.Tensor] = []
        self._one_step = False

    def add(self, steps: torch.Tensor) -> StepErrors:
        """Add the steps (B, K, q[, m]) of the next B prompts."""
        b, k, outputs = len(steps), steps.shape[1], math.prod(steps.shape[2:])
        if not b:
            return self
        target = self.target[self.done : self.done + b].unsqueeze(1)
        if steps.numel():
            lo, hi = (float(v) for v in steps.aminmax())
            if math.isfinite(lo) and math.isfinite(hi):
                self.largest = max(self.largest, -lo, hi)
            elif self.first_bad is None:
                self.first_bad = self.done + first_non_finite(steps)
        self.done += b
        if k == 1 or outputs == 1:  # keep (B, q[*m]) or (B, K) for torch's sum over all of them at the end
            self._parts.append(steps.to(torch.float64, copy=True).sub_(target).square_().reshape(b, -1))
            self._one_step = k == 1
            return self
        block = max(1, STEP_ERRORS_BLOCK // max(1, b * outputs))  # steps at a time: a float64 buffer of bounded size
        buffer = torch.empty(b * min(block, k) * outputs, dtype=torch.float64)
        # column 0: the sums so far; then each prompt's sum over its outputs, step-major, so that the running sums
        # over prompts (cumsum, sequential) go along memory
        rows = torch.empty(k, b + 1, dtype=torch.float64)
        rows[:, 0] = 0.0 if self._sum is None else self._sum
        for i in range(0, k, block):
            part = steps[:, i : i + block]
            sq = torch.sub(part, target, out=buffer[: part.numel()].view(b, part.shape[1], *part.shape[2:]))
            rows[i : i + part.shape[1], 1:] = sq.square_().flatten(2).sum(-1).T
        self._sum = rows.cumsum_(1)[:, -1].clone()
        return self

    def total(self) -> torch.Tensor:
        """(K,) float64: the squared error of each step summed over every prompt added and its outputs."""
        if self._sum is not None:
            return self._sum
        if not self._parts:
            raise ValueError("StepErrors: no steps were added")
        parts = torch.cat(self._parts)
        return parts.sum().reshape(1) if self._one_step else parts.sum(0)


def score(
    spec: TaskSpec,
    data: EvalSet,
    n: int,
    y: torch.Tensor,
    steps: torch.Tensor | StepErrors | None = None,
    w: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Every metric of a model's predictions at prompt length `n`.

    `rel_err` compares `y` (P, q) with the noiseless target (for logistic tasks, the
    regularised optimum's logit); logistic tasks add `error_rate` against the true
    label (a zero prediction counts as half an error); a returned `w` adds
    `recovery` (NMSE against the hidden parameter); returned `steps` (P, K, q), or their
    `StepErrors` accumulated chunk by chunk, add `steps_rel_err_db`, the relative error in dB
    after each step (the same numbers either way). For vector labels
    (P, q, m) predictions, (P, K, q, m) steps and a (P, m, d) `w`, every error and energy is
    summed over all output coordinates.
    """
    target = data.targets[n].double()
    out: dict[str, Any] = {"rel_err": relative_error(y.double(), target)}
    if spec.family == "logistic":
        label = data.hidden["y_query"].double()
        wrong = torch.where(y == 0, 0.5, (torch.sign(y.double()) != label).double())
        out["error_rate"] = mean(wrong.mean(-1))
    if w is not None and spec.family in RECOVERY_FAMILIES:
        true_w = data.hidden["w"].double()
        out["recovery"] = ratio(*squared_errors(w, true_w))
    if steps is not None:
        errors = steps if isinstance(steps, StepErrors) else StepErrors(target).add(steps)
        err = errors.total() / (target**2).sum()
        out["steps_rel_err_db"] = [db(float(e)) for e in err]
    return out
