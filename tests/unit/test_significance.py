"""recsys.significance against scipy.stats on fixed vectors, Holm against a hand-computed case, and the cases
without a test (too few units, identical values): a note, never an exception."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from recsys.significance import holm, paired_test, seed_summary

# per-user metric values of two models on 12 users (ties, zero differences and both signs)
BASE = np.array([0.10, 0.25, 0.00, 0.50, 0.33, 0.20, 0.00, 1.00, 0.40, 0.15, 0.60, 0.05])
OTHER = np.array([0.20, 0.25, 0.10, 0.55, 0.50, 0.10, 0.00, 1.00, 0.45, 0.30, 0.75, 0.05])


def test_seed_interval_is_scipys_t_interval_and_the_t_table_value():
    x = np.array([0.21, 0.23, 0.22, 0.25, 0.24])
    s = seed_summary(x)
    sem = stats.sem(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sem)
    assert (s.n, s.mean, s.std) == (5, pytest.approx(0.23), pytest.approx(np.std(x, ddof=1)))
    assert s.ci_low == pytest.approx(low, abs=1e-15) and s.ci_high == pytest.approx(high, abs=1e-15)
    # t(0.975, 4 d.f.) = 2.7764 from a printed table: the interval is the t one, not the normal one (1.96)
    assert s.half_width == pytest.approx(2.7764451 * sem, rel=1e-7)
    assert seed_summary(x, confidence=0.99).half_width > s.half_width


def test_seed_summary_of_one_seed_or_equal_seeds():
    one = seed_summary([0.3])
    assert one.n == 1 and one.mean == 0.3 and math.isnan(one.std) and math.isnan(one.ci_low)
    same = seed_summary([0.3, 0.3, 0.3])
    assert (same.std, same.ci_low, same.ci_high) == (0.0, 0.3, 0.3)


def test_paired_tests_are_scipys():
    got = paired_test(BASE, OTHER)
    t = stats.ttest_rel(OTHER, BASE)
    ci = t.confidence_interval(0.95)
    w = stats.wilcoxon(np.round(OTHER - BASE, 12))
    assert got.n == 12 and got.note == ""
    assert got.mean_diff == pytest.approx(np.mean(OTHER - BASE), abs=1e-15)
    assert (got.t_statistic, got.t_pvalue) == (pytest.approx(t.statistic, rel=1e-12), pytest.approx(t.pvalue, rel=1e-12))
    assert (got.diff_ci_low, got.diff_ci_high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    assert got.wilcoxon_pvalue == pytest.approx(w.pvalue, rel=1e-12)
    assert got.wilcoxon_statistic == pytest.approx(w.statistic)
    assert got.wilcoxon_n == int(np.count_nonzero(np.round(OTHER - BASE, 12))) == 8  # 4 zero differences dropped
    # the CI of the difference is mean ± t(0.975, 11) · sd / √n
    d = OTHER - BASE
    half = stats.t.ppf(0.975, 11) * d.std(ddof=1) / math.sqrt(12)
    assert got.diff_ci_high - got.mean_diff == pytest.approx(half, rel=1e-10)
    # swapping the two models flips the sign, not the p-values
    back = paired_test(OTHER, BASE)
    assert back.mean_diff == pytest.approx(-got.mean_diff) and back.t_pvalue == pytest.approx(got.t_pvalue)
    assert back.wilcoxon_pvalue == pytest.approx(got.wilcoxon_pvalue)


def test_round_off_differences_are_not_ranked():
    """0.1 + 0.2 - 0.3 is 5.5e-17, not 0: unrounded it would count as a (tiny) positive difference."""
    a = np.array([0.3, 0.5, 0.2, 0.7])
    b = np.array([0.1 + 0.2, 0.6, 0.3, 0.9])
    assert paired_test(a, b).wilcoxon_n == 3


def test_holm_matches_a_hand_computed_case():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    # a test that did not run is not part of the family (m = 2) and stays NaN
    got = holm([0.01, math.nan, 0.04])
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert holm([]).shape == (0,) and math.isnan(holm([math.nan])[0])


def test_a_constant_improvement_with_small_noise_is_significant():
    rng = np.random.default_rng(0)
    a = rng.random(300)
    b = a + 0.02 + rng.normal(0, 0.005, 300)
    got = paired_test(a, b)
    assert got.t_pvalue < 1e-10 and got.wilcoxon_pvalue < 1e-10
    assert got.diff_ci_low < 0.02 < got.diff_ci_high and got.diff_ci_low > 0


def test_cases_without_a_test_say_why():
    same = paired_test(BASE, BASE.copy())
    assert same.note.startswith("identical") and same.mean_diff == 0.0 and math.isnan(same.t_pvalue)
    one = paired_test(BASE[:1], OTHER[:1])
    assert one.note.startswith("too few units (n = 1)") and math.isnan(one.wilcoxon_pvalue)
    shifted = paired_test(BASE, BASE + 0.25)
    assert shifted.note.startswith("constant difference") and math.isnan(shifted.t_pvalue)
    assert shifted.mean_diff == pytest.approx(0.25) and shifted.wilcoxon_pvalue < 0.01
    with pytest.raises(ValueError):
        paired_test(BASE, OTHER[:5])
