"""The verification rule (`iclbench.submissions.rank_test`) on synthetic per-prompt errors: what it flags, what
cannot rescue a cheat, and false alarms of honest heavy-tailed models at the nominal rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from iclbench.submissions.rank_test import (
    ALPHA,
    COMPARISONS,
    FALSE_ALARM,
    TAIL,
    TESTS,
    Z,
    compare_errors,
    rank_z,
    shift_db,
    tail_p,
)
from iclbench.submissions.rerun import ROUNDOFF

M = 2048
"""Prompts per set, as in the suite."""


def honest(rng: np.random.Generator, m: int = M, spread_db: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt relative errors, log-normal with `spread_db` dB standard deviation around -20 dB, and energies."""
    return 10 ** ((-20 + spread_db * rng.standard_normal(m)) / 10), rng.chisquare(8, m)


def log_cauchy(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-tailed relative errors: 10 dB x a standard Cauchy around -20 dB (cut at +-300 dB), and energies."""
    return 10 ** (np.clip(-2 + rng.standard_cauchy(m), -30, 30)), rng.chisquare(8, m)


def test_the_threshold_is_fixed_by_the_suite() -> None:
    assert TESTS == 2 and COMPARISONS == 77 and ALPHA == pytest.approx(FALSE_ALARM / 154)
    assert Z == pytest.approx(stats.norm.isf(ALPHA)) and 3.8 < Z < 3.9
    assert math.comb(M, TAIL) / math.comb(2 * M, TAIL) <= ALPHA  # the tail test can reject: 16 of 16 fresh


def test_statistics_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        public, fresh = np.round(rng.standard_cauchy(300), 1) ** 2, np.round(rng.standard_cauchy(300), 1) ** 2
        reference = stats.mannwhitneyu(fresh, public, alternative="greater", method="asymptotic", use_continuity=False)
        assert rank_z(public, fresh) == pytest.approx(stats.norm.isf(reference.pvalue), rel=1e-9)
        x, s, p = tail_p(public, fresh)
        top = np.sort(np.concatenate([public, fresh]))[-TAIL]
        assert (x, s) == ((public >= top).sum(), (np.concatenate([public, fresh]) >= top).sum()) and s >= TAIL
        assert p == pytest.approx(stats.hypergeom.cdf(x, 600, 300, s), rel=1e-9)
        pairs = np.subtract.outer(10 * np.log10(fresh + 1e-3), 10 * np.log10(public + 1e-3)).ravel()
        lower_median = np.sort(pairs)[(len(pairs) + 1) // 2 - 1]
        assert shift_db(public + 1e-3, fresh + 1e-3) == pytest.approx(lower_median, abs=1e-4)


def test_a_look_up_fails_both_tests() -> None:
    public, energy = honest(np.random.default_rng(2))
    fresh = honest(np.random.default_rng(3))
    got = compare_errors((np.zeros(M), energy), fresh, "float32")
    assert got["verdict"] == "fail" and got["rank_z"] > 50 and got["tail_public"] == 0 and got["tail_p"] <= ALPHA
    assert got["public_db"] < -300 + 1e-9 and got["shift_db"] > 100


def test_a_huge_error_on_one_fresh_prompt_does_not_rescue_a_look_up() -> None:
    energy, (fresh, fresh_energy) = honest(np.random.default_rng(4))[1], honest(np.random.default_rng(5))
    plain = compare_errors((np.zeros(M), energy), (fresh, fresh_energy), "float32")
    blown = fresh.copy()
    blown[7] = 1e30
    got = compare_errors((np.zeros(M), energy), (blown, fresh_energy), "float32")
    assert got["verdict"] == "fail" and got["fresh_db"] > plain["fresh_db"] + 200
    # ranks alone enter both tests, and prompt 7 ranked above every public one before: the same numbers
    assert (got["rank_z"], got["tail_p"]) == (plain["rank_z"], plain["tail_p"])


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
    cheat = public.copy()
    cheat[np.argsort(public * energy)[-32:]] = 0.0  # a look-up of the 32 prompts that weigh most in the score
    got = compare_errors((cheat, energy), fresh, "float32")
    assert got["verdict"] == "fail" and got["tail_public"] == 0 and got["tail_p"] <= ALPHA
    assert got["rank_z"] < Z  # the rank test alone would not see it
    assert got["public_db"] < compare_errors((public, energy), fresh, "float32")["public_db"] - 20


def test_the_tail_test_reads_the_squared_errors_the_score_sums() -> None:
    rng = np.random.default_rng(15)
    energy, fresh_energy = 10 ** (2 * rng.standard_normal((2, M)))  # targets of all sizes
    public, fresh = honest(rng, spread_db=3.0)[0], honest(rng, spread_db=3.0)[0]
    cheat = public.copy()
    cheat[np.argsort(public * energy)[-32:]] = 0.0  # the 32 largest squared errors: ordinary relative ones
    got = compare_errors((cheat, energy), (fresh, fresh_energy), "float32")
    assert got["verdict"] == "fail" and got["tail_public"] == 0
    assert tail_p(cheat, fresh)[2] > 0.05  # on relative errors, the same 16 largest would not show it
    assert got["public_db"] < compare_errors((public, energy), (fresh, fresh_energy), "float32")["public_db"] - 3


def test_the_rank_test_does_not_depend_on_the_errors_spread() -> None:
    rng = np.random.default_rng(10)
    (public, energy), (fresh, fresh_energy) = honest(rng), honest(rng)
    got = compare_errors((public, energy), (fresh, fresh_energy), "float32")
    widened = compare_errors((public**2, energy), (fresh**2, fresh_energy), "float32")  # twice the spread in dB
    assert widened["rank_z"] == pytest.approx(got["rank_z"], rel=1e-12)  # same order, same ranks
    assert widened["shift_db"] == pytest.approx(2 * got["shift_db"], abs=1e-3)
    scale = 2.0**20  # a power of two: the products are exact, so the order is kept exactly
    scaled = compare_errors((public * scale, energy), (fresh * scale, fresh_energy), "float32")
    assert (scaled["rank_z"], scaled["tail_public"], scaled["tail_size"]) == pytest.approx(
        (got["rank_z"], got["tail_public"], got["tail_size"]), rel=1e-12)


def test_honest_heavy_tailed_errors_pass_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(11)
    draws = 2000
    z, p = np.empty(draws), np.empty(draws)
    for i in range(draws):
        (public, energy), (fresh, fresh_energy) = log_cauchy(rng, 256), log_cauchy(rng, 256)
        z[i] = rank_z(np.maximum(public, ROUNDOFF["float32"]), np.maximum(fresh, ROUNDOFF["float32"]))
        p[i] = tail_p(public * energy, fresh * fresh_energy)[2]
    assert 0.03 <= (z > stats.norm.isf(0.05)).mean() <= 0.07  # nominal 5%
    assert (z > stats.norm.isf(0.001)).mean() <= 0.004  # nominal 0.1%
    assert (p <= 0.05).mean() <= 0.07  # at most 5%: the test is discrete
    assert ((z >= Z) | (p <= ALPHA)).sum() <= 2  # expected 2000 x 2 x 6.5e-5 = 0.26


def test_errors_below_the_round_off_floor_tie() -> None:
    energy = np.ones(64)
    both_below = compare_errors((np.full(64, 1e-20), energy), (np.full(64, 1e-16), energy), "float32")
    assert both_below["verdict"] == "pass" and both_below["rank_z"] == 0.0 and both_below["tail_p"] == 1.0
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
    assert got["verdict"] == "pass" and got["rank_z"] < -Z and got["tail_p"] == 1.0


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
