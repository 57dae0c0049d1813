"""The statistics of fresh-draw verification: whether a model's per-prompt errors on the public
evaluation set are smaller than on a fresh set of the same distribution, from the two arrays alone.

An honest model is a function of the prompt, and the prompts of the public and of a fresh set are
independent draws of one distribution: its per-prompt errors on the two sets are then exchangeable,
whatever their distribution. Two rank tests use that alone, so their thresholds are fixed by the
numbers of prompts and of comparisons, never by the errors' spread: a model cannot widen its own
tolerance.

The relative errors (`rel_err` of `iclbench.samples`) are first raised to the run dtype's
round-off floor eps² (`ROUNDOFF`, -138.5 dB in float32), so that errors below it tie, and both
sides are cut to the same number of prompts m (the first m of each: the prompts of a set are
exchangeable, and with equal sides both statistics' null distributions are symmetric).

Each test is a linear rank statistic: rank the 2m errors together (ties sharing their group's
mean score), sum the scores of the fresh ones, and express the sum as z, its distance from its
mean in standard deviations of its permutation distribution (the labels public and fresh shuffled:
exactly the distribution of an honest model's errors, whatever they are).

- **Rank test** (`rank_z`, Mann-Whitney: the score of a rank is the rank), on the relative errors.
  It sees a shift of the bulk: a soft blend toward the targets, a look-up.
- **Tail test** (`tail_z`, Savage: rank r of N scores 1/N + ... + 1/(N - r + 1), from 1/N up to
  about ln N + 0.58, so the largest errors weigh most), on the squared errors (relative error x the
  target's energy: what the score sums). It sees a look-up of the public prompts that weigh most in
  the score sooner than the rank test (from about 60 to 100 of 2,048, depending on the errors'
  tails, against about 100), and no prompt moves it by more than 0.28 standard deviations (the
  rank test: 0.05), so a public error left at the top to mask a look-up does not.

The threshold is set for the way verification is used: the public sets are drawn once, and a model is
verified again and again on new fresh sets, so what matters is its false-alarm rate given its public
errors. Half of each statistic's variance comes from each set (z = z_public + z_fresh, each about N(0,
1/2)). `Z` adds the `ALPHA` quantiles of both halves, sqrt(2) x the normal ALPHA quantile (5.59 in suite
v4): for all public sets but a fraction ALPHA of them, the fresh half then exceeds what is left with
probability at most ALPHA. With `ALPHA` = `FALSE_ALARM` / (`COMPARISONS` x 2) (Bonferroni over both tests
and the suite's prompt lengths, those of in-pool prompts included, which covers the dependence of one
prompt's prefixes), an honest model's public sets are, with probability at least 1 - `FALSE_ALARM`, such
that each verification of the whole suite fails with probability at most `FALSE_ALARM`. Doing better on
fresh data is never flagged. The report also gives the Hodges-Lehmann shift (`shift_db`): the median over
pairs of the fresh minus the public error in dB, the typical size of a difference, which the rule does
not use.

What no test can see: a gain made on fewer prompts than an honest draw can tell apart from chance
(a look-up of the few dozen prompts that weigh most), and a uniform shift of the errors smaller
than about 0.2 of their per-prompt spread in dB, at 2,048 prompts. On heavy-tailed lengths,
whose score is set by a handful of prompts, the first can be worth many dB; the score's own 90%
interval is then as wide.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from iclbench.metrics import db
from iclbench.submissions.rerun import ROUNDOFF
from iclbench.tasks import TASKS

FALSE_ALARM = 0.01
"""Target probability that an honest model fails a verification of the whole suite."""
COMPARISONS = sum(len(t.spec.lengths) * (2 if t.family.pooled else 1) for t in TASKS.values())
"""Prompt lengths compared on a full verification of a model that declares a pool of every task it can (each
length of a task that can be pooled is compared on the evaluation set and on in-pool prompts): 77 in suite v3,
129 in v4 (109 lengths, 20 of them of tasks that can be pooled)."""
TESTS = 2
"""Tests per prompt length: the rank test and the tail test."""
ALPHA = FALSE_ALARM / (COMPARISONS * TESTS)
"""Each test's false-alarm rate at each length, given the public set, for all public sets but a fraction ALPHA of
them (6.5e-5 in suite v3)."""


Z = math.sqrt(2) * NormalDist().inv_cdf(1 - ALPHA)
"""Both tests' threshold on z (5.41 in suite v3, 5.59 in v4): ALPHA's quantile for the public set's half of the
statistic's variance, plus ALPHA's quantile for the fresh set's half."""
SHIFT_TOLERANCE_DB = 1e-4
"""How closely `shift_db` locates the Hodges-Lehmann shift."""


PerPrompt = tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]
"""One set's per-prompt relative errors and target energies (`rel_err`, `target_sq` of `iclbench.samples`)."""


def _array(values: np.ndarray | torch.Tensor, what: str, positive: bool) -> np.ndarray:
    """`values` as a float64 NumPy vector; `ValueError` unless they are finite and >= 0 (> 0 when `positive`)."""
    a = np.asarray(values.double().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if a.ndim != 1 or not np.isfinite(a).all() or ((a <= 0) if positive else (a < 0)).any():
        raise ValueError(f"per-prompt {what} must be a 1-D array of finite numbers {'> 0' if positive else '>= 0'}")
    return a


def floored(errors: np.ndarray | torch.Tensor, dtype: str) -> np.ndarray:
    """Per-prompt relative errors as float64, raised to the dtype's round-off floor; `ValueError` when one is
    negative or not finite."""
    return np.maximum(_array(errors, "errors", positive=False), ROUNDOFF[dtype])


def _scored_z(values: np.ndarray, m: int, score: Callable[[int], np.ndarray]) -> float:
    """z of the sum of the last m values' rank scores (`score(N)`: the scores of ranks 1..N, increasing),
    ties sharing their group's mean score, against its permutation distribution for two samples of m; 0 when
    every score ties."""
    n = len(values)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    cumulative = np.concatenate([[0.0], np.cumsum(score(n))])
    ends = np.cumsum(counts)
    shared = (cumulative[ends] - cumulative[ends - counts]) / counts  # each tie group's mean score
    centred = shared[inverse] - cumulative[-1] / n  # every score ties: exactly 0, as one group's mean is the mean
    var = m * m / (n * (n - 1)) * float((centred**2).sum())
    return 0.0 if var <= 0 else float(centred[m:].sum()) / math.sqrt(var)


def _wilcoxon(n: int) -> np.ndarray:
    """The ranks themselves, 1..n."""
    return np.arange(1, n + 1, dtype=np.float64)


def _savage(n: int) -> np.ndarray:
    """Exponential scores: rank r scores 1/n + 1/(n - 1) + ... + 1/(n - r + 1), from 1/n to about ln n + 0.58."""
    return np.cumsum(1.0 / np.arange(n, 0, -1, dtype=np.float64))


def rank_z(public: np.ndarray, fresh: np.ndarray) -> float:
    """The one-sided Mann-Whitney z of two equal-sized samples: positive when the fresh errors are larger."""
    return _scored_z(np.concatenate([public, fresh]), len(fresh), _wilcoxon)


def tail_z(public: np.ndarray, fresh: np.ndarray) -> float:
    """The one-sided Savage z of two equal-sized samples: positive when the fresh errors are larger, weighing the
    largest most."""
    return _scored_z(np.concatenate([public, fresh]), len(fresh), _savage)


def shift_db(public: np.ndarray, fresh: np.ndarray) -> float:
    """The Hodges-Lehmann shift in dB: the lower median over all pairs of 10 log10(fresh / public) (positive when
    the fresh errors are larger), within `SHIFT_TOLERANCE_DB`, by bisection on the count of pairs below a shift."""
    f, p = 10 * np.log10(fresh), np.sort(10 * np.log10(public))
    half = (len(f) * len(p) + 1) // 2

    def at_most(t: float) -> int:  # pairs with f_i - p_j <= t
        return int(len(p) * len(f) - np.searchsorted(p, f - t, side="left").sum())

    lo, hi = float(f.min() - p[-1]), float(f.max() - p[0])
    while hi - lo > SHIFT_TOLERANCE_DB:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if at_most(mid) >= half else (mid, hi)
    return hi


def rank_tests(public: PerPrompt, fresh: PerPrompt, dtype: str) -> dict[str, Any]:
    """Both tests on one task and prompt length, from the per-prompt errors of the public and of the fresh set,
    over the first m prompts of each (m the shorter side's), and the verdict: "fail" when either rejects at
    `ALPHA`."""
    (pub_rel, pub_energy), (new_rel, new_energy) = (
        (floored(e, dtype), _array(w, "target energies", positive=True)) for e, w in (public, fresh)
    )
    m = min(len(pub_rel), len(new_rel))
    if m == 0 or len(pub_energy) != len(pub_rel) or len(new_energy) != len(new_rel):
        raise ValueError("per-prompt errors and energies: one of each per prompt, and at least one prompt a side")
    z = rank_z(pub_rel[:m], new_rel[:m])
    z_tail = tail_z(pub_rel[:m] * pub_energy[:m], new_rel[:m] * new_energy[:m])
    return {"prompts": m, "rank_z": z, "tail_z": z_tail, "verdict": "fail" if max(z, z_tail) >= Z else "pass"}


def compare_errors(public: PerPrompt, fresh: PerPrompt, dtype: str) -> dict[str, Any]:
    """What the report says of one task and prompt length: each side's score over all its prompts, the
    difference, the shift (over the first m prompts of each) and `rank_tests`."""
    tests = rank_tests(public, fresh, dtype)
    m = tests["prompts"]
    public_db, fresh_db = score_db(*public), score_db(*fresh)
    shift = shift_db(floored(public[0], dtype)[:m], floored(fresh[0], dtype)[:m])
    return {"public_db": public_db, "fresh_db": fresh_db, "difference_db": fresh_db - public_db, "shift_db": shift,
            **tests}


def score_db(errors: np.ndarray | torch.Tensor, energy: np.ndarray | torch.Tensor) -> float:
    """The suite's `rel_err` in dB from per-prompt relative errors and target energies."""
    e, w = _array(errors, "errors", positive=False), _array(energy, "target energies", positive=True)
    return db(float((e * w).sum() / w.sum()))
