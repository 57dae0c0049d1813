"""The statistics of fresh-draw verification: whether a model's per-prompt errors on the public
evaluation set are smaller than on a fresh set of the same distribution, from the two arrays alone.

An honest model is a function of the prompt, and the prompts of the public and of a fresh set are
independent draws of one distribution: its per-prompt errors on the two sets are then exchangeable,
whatever their distribution. Two rank tests use that alone, so their false-alarm rate is fixed by
the numbers of prompts, never by the errors' spread: a model cannot widen its own tolerance.

The relative errors (`rel_err` of `iclbench.samples`) are first raised to the run dtype's
round-off floor eps² (`ROUNDOFF`, -138.5 dB in float32), so that errors below it tie, and both
sides are cut to the same number of prompts m (the first m of each: the prompts of a set are
exchangeable, and equal sizes keep the null distributions symmetric, where the normal
approximation is at its best).

- **Rank test** (`rank_z`, one-sided Mann-Whitney, on the relative errors): U counts the (fresh,
  public) pairs in which the fresh prompt has the larger error, ties half; z is U's distance from
  m²/2 in standard deviations of its permutation distribution, with mid-ranks and the
  tie-corrected variance m²/12 ((2m + 1) - sum(t³ - t) / (2m (2m - 1))), t the sizes of the tie
  groups. It sees a shift of the bulk: a soft blend toward the targets, a look-up.
- **Tail test** (`tail_p`, on the squared errors, relative error x the target's energy: what the
  score sums): of the `TAIL` largest of the 2m (every error tied with the last of them included,
  s in all), x are public; under exchangeability x is hypergeometric (2m errors, m public, s
  drawn), and p = P(X <= x) is exact, ties included. It sees the largest public errors removed (a
  look-up of the prompts that weigh most in the score), which the rank test, moved by about
  m / sd(U) = 0.05 standard deviations per prompt at m = 2,048, sees only beyond ~70 prompts.

A length fails when either test rejects at `ALPHA` = `FALSE_ALARM` / (`COMPARISONS` x 2) (one
sided; Bonferroni over both tests and the suite's prompt lengths, which covers the dependence of
one prompt's prefixes): an honest model then fails the whole suite with probability at most
`FALSE_ALARM`. Doing better on fresh data is never flagged. The report also gives the
Hodges-Lehmann shift (`shift_db`): the median over pairs of the fresh minus the public error in dB,
the typical size of a difference, which the rule does not use.

What no test can see: a gain made on fewer prompts than an honest draw can tell apart from chance
(the few largest public errors removed: with `TAIL` = 16, under about 15 of 2,048), and a uniform
shift smaller than the errors' spread allows (about 0.17 of the per-prompt spread at 2,048
prompts). On heavy-tailed lengths, whose score is set by a handful of prompts, the first can be
worth many dB; the score's own 90% interval is then as wide.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from iclbench.metrics import db
from iclbench.submissions.rerun import ROUNDOFF
from iclbench.tasks import TASKS

FALSE_ALARM = 0.01
"""Target probability that an honest model fails verification of the whole suite."""
COMPARISONS = sum(len(t.spec.lengths) for t in TASKS.values())
"""Prompt lengths compared on a full verification (77 in suite v3)."""
TESTS = 2
"""Tests per prompt length: the rank test and the tail test."""
ALPHA = FALSE_ALARM / (COMPARISONS * TESTS)
"""One-sided level of each test at each length (6.5e-5 in suite v3)."""
Z = NormalDist().inv_cdf(1 - ALPHA)
"""The rank test's threshold on z (3.83 in suite v3)."""
TAIL = 16
"""Errors in the tail test's top: an honest model has all 16 on fresh prompts with probability about 2^-16."""
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


def rank_z(public: np.ndarray, fresh: np.ndarray) -> float:
    """The one-sided Mann-Whitney z of two equal-sized samples: positive when the fresh errors are larger.
    0 when every error ties (no evidence either way)."""
    m = len(public)
    values = np.concatenate([public, fresh])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    mid = np.cumsum(counts) - (counts - 1) / 2  # each distinct value's mid-rank, from 1
    u = float(mid[inverse[m:]].sum()) - m * (m + 1) / 2
    n = 2 * m
    ties = float((counts.astype(np.float64) ** 3 - counts).sum())
    var = m * m / 12 * ((n + 1) - ties / (n * (n - 1)))
    return 0.0 if var <= 0 else (u - m * m / 2) / math.sqrt(var)


def tail_p(public: np.ndarray, fresh: np.ndarray, tail: int = TAIL) -> tuple[int, int, float]:
    """(x, s, p): of the `tail` largest of both samples (and every error tied with the last), s in all, x are
    public, and p = P(X <= x) for X hypergeometric (2m errors, m public, s drawn), exactly."""
    m = len(public)
    values = np.concatenate([public, fresh])
    k = min(tail, len(values))
    threshold = np.partition(values, len(values) - k)[len(values) - k]
    s = int((values >= threshold).sum())
    x = int((public >= threshold).sum())
    ways = sum(math.comb(m, i) * math.comb(m, s - i) for i in range(max(0, s - m), x + 1))
    return x, s, ways / math.comb(2 * m, s)


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
    x, s, p = tail_p(pub_rel[:m] * pub_energy[:m], new_rel[:m] * new_energy[:m])
    rank_p = NormalDist().cdf(-z)
    verdict = "fail" if rank_p <= ALPHA or p <= ALPHA else "pass"
    return {
        "prompts": m, "rank_z": z, "rank_p": rank_p, "tail_public": x, "tail_size": s, "tail_p": p, "verdict": verdict
    }


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
