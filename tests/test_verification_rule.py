"""The verification rule (`iclbench.submissions.rank_test`) on synthetic per-prompt errors: both statistics
against their definitions, what the rule flags, what cannot rescue a cheat, and honest heavy-tailed errors at
the nominal rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from iclbench.submissions.rank_test import (
    ALPHA,
    COMPARISONS,
    FALSE_ALARM,
    TESTS,
    Z,
    compare_errors,
    rank_z,
    shift_db,
    tail_z,
)
from iclbench.submissions.rerun import ROUNDOFF
from iclbench.tasks import TASKS

M = 2048
"""Prompts per set, as in the suite."""


def honest(rng: np.random.Generator, m: int = M, spread_db: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt relative errors, log-normal with `spread_db` dB standard deviation around -20 dB, and energies."""
    return 10 ** ((-20 + spread_db * rng.standard_normal(m)) / 10), rng.chisquare(8, m)


def log_cauchy(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-tailed relative errors: 10 dB x a standard Cauchy around -20 dB (cut at +-300 dB), and energies."""
    return 10 ** (np.clip(-2 + rng.standard_cauchy(m), -30, 30)), rng.chisquare(8, m)


def test_the_threshold_is_fixed_by_the_suite() -> None:
    """109 prompt lengths, 20 of them of the four tasks a model can declare a pool of, compared on the evaluation set
    and on in-pool prompts: 129 comparisons of two tests each."""
    pooled = [t for t in TASKS.values() if t.family.pooled]
    assert sum(len(t.spec.lengths) for t in TASKS.values()) == 109 and sum(len(t.spec.lengths) for t in pooled) == 20
    assert TESTS == 2 and COMPARISONS == 129 and ALPHA == pytest.approx(FALSE_ALARM / 258)
    assert Z == pytest.approx(math.sqrt(2) * stats.norm.isf(ALPHA)) and 5.58 < Z < 5.60


@pytest.mark.parametrize("statistic", [rank_z, tail_z])
def test_z_is_half_public_half_fresh(statistic) -> None:
    """The threshold's premise: given the public set, z varies by half its variance (the fresh set's half)."""
    rng = np.random.default_rng(16)
    z = np.array([[statistic(public, rng.standard_exponential(256)) for _ in range(60)]
                  for public in rng.standard_exponential((60, 256))])
    assert 0.3 < z.mean(1).var() < 0.75 and 0.4 < z.var(1).mean() < 0.6  # each about 1/2


def savage_by_permutation(public: np.ndarray, fresh: np.ndarray, rng: np.random.Generator) -> float:
    """The Savage z from its definition: each error's score the mean over its tie group's ranks r of
    sum_{k = N - r + 1}^N 1/k, the fresh scores' sum against 20,000 random relabellings."""
    values = np.concatenate([public, fresh])
    n = len(values)
    low, high = stats.rankdata(values, "min").astype(int), stats.rankdata(values, "max").astype(int)
    score = lambda r: sum(1 / k for k in range(n - r + 1, n + 1))  # noqa: E731
    scores = np.array([np.mean([score(r) for r in range(lo, hi + 1)]) for lo, hi in zip(low, high)])
    sums = np.array([scores[rng.permutation(n)[: len(fresh)]].sum() for _ in range(20000)])
    return (scores[len(public):].sum() - sums.mean()) / sums.std()


def test_statistics_match_their_definitions_with_ties() -> None:
    rng = np.random.default_rng(1)
    for _ in range(3):
        public, fresh = np.round(rng.standard_cauchy(100), 1) ** 2, 2 * np.round(rng.standard_cauchy(100), 1) ** 2
        reference = stats.mannwhitneyu(fresh, public, alternative="greater", method="asymptotic", use_continuity=False)
        assert rank_z(public, fresh) == pytest.approx(stats.norm.isf(reference.pvalue), rel=1e-9)
        assert tail_z(public, fresh) == pytest.approx(savage_by_permutation(public, fresh, rng), abs=0.03)
        pairs = np.subtract.outer(10 * np.log10(fresh + 1e-3), 10 * np.log10(public + 1e-3)).ravel()
        lower_median = np.sort(pairs)[(len(pairs) + 1) // 2 - 1]
        assert shift_db(public + 1e-3, fresh + 1e-3) == pytest.approx(lower_median, abs=1e-4)


def test_a_look_up_fails_both_tests() -> None:
    public, energy = honest(np.random.default_rng(2))
    fresh = honest(np.random.default_rng(3))
    got = compare_errors((np.zeros(M), energy), fresh, "float32")
    assert got["verdict"] == "fail" and got["rank_z"] > 50 and got["tail_z"] > 20
    assert got["public_db"] < -300 + 1e-9 and got["shift_db"] > 100


def test_a_huge_error_on_one_fresh_prompt_does_not_rescue_a_look_up() -> None:
    energy, (fresh, fresh_energy) = honest(np.random.default_rng(4))[1], honest(np.random.default_rng(5))
    plain = compare_errors((np.zeros(M), energy), (fresh, fresh_energy), "float32")
    blown = fresh.copy()
    blown[7] = 1e30
    got = compare_errors((np.zeros(M), energy), (blown, fresh_energy), "float32")
    assert got["verdict"] == "fail" and got["fresh_db"] > plain["fresh_db"] + 200
    # ranks alone enter both tests, and prompt 7 ranked above every public one before: the same numbers
    assert (got["rank_z"], got["tail_z"]) == (plain["rank_z"], plain["tail_z"])


def test_bad_public_prompts_do_not_rescue_a_soft_cheat() -> None:
    public, energy = honest(np.random.default_rng(6), spread_db=5.0)
    fresh = honest(np.random.default_rng(7), spread_db=5.0)
    blend = public * (1 - 0.3) ** 2  # prediction 0.7 x honest + 0.3 x target: every error 3.1 dB smaller
    assert compare_errors((public, energy), fresh, "float32")["verdict"] == "pass"
    for bad in (1, 3, 10):
        cheat = blend.copy()
        cheat[:bad] = 1e12
        got = compare_errors((cheat, energy), fresh, "float32")
        assert got["verdict"] == "fail" and got["rank_z"] > Z + 5, bad
        assert got["shift_db"] == pytest.approx(3.1, abs=0.5)


def test_removing_the_largest_public_errors_fails_the_tail_test() -> None:
    public, energy = log_cauchy(np.random.default_rng(8), M)
    fresh = log_cauchy(np.random.default_rng(9), M)
    assert compare_errors((public, energy), fresh, "float32")["verdict"] == "pass"
    worst = np.argsort(public * energy)[::-1]
    cheat = public.copy()
    cheat[worst[:128]] = 0.0  # a look-up of the 128 prompts that weigh most in the score
    got = compare_errors((cheat, energy), fresh, "float32")
    assert got["verdict"] == "fail" and got["tail_z"] > Z + 3
    assert got["public_db"] < compare_errors((public, energy), fresh, "float32")["public_db"] - 20
    cheat[worst[128]] *= 100  # one public error left at the top
    planted = compare_errors((cheat, energy), fresh, "float32")
    assert planted["verdict"] == "fail" and planted["tail_z"] > got["tail_z"] - 0.3


def test_the_tail_test_reads_the_squared_errors_the_score_sums() -> None:
    rng = np.random.default_rng(15)
    energy, fresh_energy = 10 ** (2 * rng.standard_normal((2, M)))  # targets of all sizes
    public, fresh = honest(rng, spread_db=3.0)[0], honest(rng, spread_db=3.0)[0]
    cheat = public.copy()
    cheat[np.argsort(public * energy)[-150:]] = 0.0  # the 150 largest squared errors: ordinary relative ones
    got = compare_errors((cheat, energy), (fresh, fresh_energy), "float32")
    assert got["verdict"] == "fail" and got["tail_z"] > Z + 2 and got["rank_z"] < Z - 1  # the rank test: not seen
    assert tail_z(cheat, fresh) < 3  # nor on relative errors
    assert got["public_db"] < compare_errors((public, energy), (fresh, fresh_energy), "float32")["public_db"] - 3


def test_no_prompt_moves_a_test_by_more_than_a_third_of_a_standard_deviation() -> None:
    (public, energy), (fresh, fresh_energy) = honest(np.random.default_rng(17)), honest(np.random.default_rng(18))
    got = compare_errors((public, energy), (fresh, fresh_energy), "float32")
    for i in np.argsort(public * energy)[:3]:  # the smallest public errors, each made the largest of all
        moved = public.copy()
        moved[i] = 1e30
        after = compare_errors((moved, energy), (fresh, fresh_energy), "float32")
        assert 0 < got["rank_z"] - after["rank_z"] < 0.06 and 0 < got["tail_z"] - after["tail_z"] < 0.3


def test_the_tests_do_not_depend_on_the_errors_spread() -> None:
    rng = np.random.default_rng(10)
    (public, energy), (fresh, fresh_energy) = honest(rng), honest(rng)
    got = compare_errors((public, energy), (fresh, fresh_energy), "float32")
    widened = compare_errors((public**2, energy), (fresh**2, fresh_energy), "float32")  # twice the spread in dB
    assert widened["rank_z"] == pytest.approx(got["rank_z"], rel=1e-12)  # same order, same ranks
    assert widened["shift_db"] == pytest.approx(2 * got["shift_db"], abs=1e-3)
    scale = 2.0**20  # a power of two: the products are exact, so the order is kept exactly
    scaled = compare_errors((public * scale, energy), (fresh * scale, fresh_energy), "float32")
    assert (scaled["rank_z"], scaled["tail_z"]) == pytest.approx((got["rank_z"], got["tail_z"]), rel=1e-12)


def test_honest_heavy_tailed_errors_pass_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(11)
    draws = 2000
    z = np.empty((draws, 2))
    for i in range(draws):
        (public, energy), (fresh, fresh_energy) = log_cauchy(rng, 256), log_cauchy(rng, 256)
        z[i] = rank_z(np.maximum(public, ROUNDOFF["float32"]), np.maximum(fresh, ROUNDOFF["float32"])), tail_z(
            np.maximum(public, ROUNDOFF["float32"]) * energy, np.maximum(fresh, ROUNDOFF["float32"]) * fresh_energy)
    assert ((0.03 <= (z > stats.norm.isf(0.05)).mean(0)) & ((z > stats.norm.isf(0.05)).mean(0) <= 0.07)).all()
    assert ((z > stats.norm.isf(0.001)).mean(0) <= 0.004).all()  # nominal 0.1%
    assert z.max() < Z  # the rule's threshold is far out: 5.4 standard deviations


def test_errors_below_the_round_off_floor_tie() -> None:
    energy = np.ones(64)
    both_below = compare_errors((np.full(64, 1e-20), energy), (np.full(64, 1e-16), energy), "float32")
    assert both_below["verdict"] == "pass" and both_below["rank_z"] == both_below["tail_z"] == 0.0
    assert both_below["shift_db"] == pytest.approx(0.0, abs=1e-4)
    # above float32's floor (-138.5 dB), or in float64 (floor -313 dB), the same gap is a difference
    above = compare_errors((np.full(64, 1e-20), energy), (np.full(64, 1e-12), energy), "float32")
    assert above["verdict"] == "fail"
    assert above["shift_db"] == pytest.approx(10 * math.log10(1e-12 / ROUNDOFF["float32"]), abs=1e-3)
    assert compare_errors((np.full(64, 1e-20), energy), (np.full(64, 1e-16), energy), "float64")["verdict"] == "fail"
    few = np.full(64, 1e-20)
    few[:3] = 1e-12  # an exact solver: a few fresh prompts' round-off above the floor
    assert compare_errors((np.full(64, 0.0), energy), (few, energy), "float32")["verdict"] == "pass"


def test_better_on_fresh_data_is_never_flagged() -> None:
    public, energy = honest(np.random.default_rng(12))
    got = compare_errors((public, energy), (public * 1e-3, energy), "float32")
    assert got["verdict"] == "pass" and got["rank_z"] < -Z and got["tail_z"] < -Z


def test_the_first_prompts_of_the_longer_side_are_compared() -> None:
    (public, energy), (fresh, fresh_energy) = honest(np.random.default_rng(13)), honest(np.random.default_rng(14))
    short = compare_errors((public, energy), (fresh[:256], fresh_energy[:256]), "float32")
    assert short["prompts"] == 256
    assert short["rank_z"] == pytest.approx(rank_z(public[:256], fresh[:256]), rel=1e-12)
    assert short["public_db"] == pytest.approx(10 * math.log10((public * energy).sum() / energy.sum()))


@pytest.mark.parametrize(
    "errors, energy",
    [([np.nan, 1.0], [1.0, 1.0]), ([-1.0, 1.0], [1.0, 1.0]), ([1.0, 1.0], [0.0, 1.0]), ([1.0, 1.0], [1.0]), ([], [])],
)
def test_arrays_that_are_not_errors_are_refused(errors: list[float], energy: list[float]) -> None:
    with pytest.raises(ValueError, match="per-prompt"):
        compare_errors((np.array(errors), np.array(energy)), (np.ones(2), np.ones(2)), "float32")
