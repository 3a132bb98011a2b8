"""The report's statistics on known inputs, and the coverage of every interval simulated
at the run counts studies have (3-8 per group), with fixed seeds."""
import math

import numpy as np
import pytest
import scipy.stats

from tfgan_exp.report import statistics as st


def coverage(interval, draw, truth, sims, seed=0):
    """Share of ``sims`` simulated data sets whose interval holds ``truth``."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        estimate = interval(*draw(rng))
        hits += estimate.low <= truth <= estimate.high
    return hits / sims


# --- a group's median -------------------------------------------------------------------

def test_median_interval_is_order_statistics_with_their_exact_confidence():
    five = st.median_interval([7.3, 6.8, 7.1, None, 7.0, float("nan"), 7.2])
    assert (five.value, five.low, five.high, five.n) == (7.1, 6.8, 7.3, 5)
    assert five.confidence == pytest.approx(1 - 2 / 32)  # [min, max] at n = 5: 93.75%
    assert five.text(2) == "7.10 [6.80, 7.30] (93.8%)"
    ten = st.median_interval(list(range(10)))
    # Binomial: [x(2), x(9)] (1-based) is the narrowest interval of at least 95% at n = 10.
    assert (ten.low, ten.high, ten.confidence) == (1.0, 8.0, 0.95)
    assert ten.text(1) == "4.5 [1.0, 8.0]"  # 95% or more: no level printed
    assert st.median_interval([2.0]).text(1) == "2.0" and not st.median_interval([2.0]).has_interval
    assert st.median_interval([None]).text() == "–"
    assert st.median_interval([4.0, 4.0]).text(1) == "4.0 [4.0, 4.0] (50%)"
    for n in range(6, 31):  # the interval scipy's quantile_test gives, where it has one
        x = np.random.default_rng(n).normal(size=n)
        ours = st.median_interval(x)
        ci = scipy.stats.quantile_test(x, q=np.median(x)).confidence_interval(0.95)
        assert (ours.low, ours.high) == (ci.low, ci.high)


@pytest.mark.parametrize("n, at_least", [(5, 0.93), (8, 0.95)])
def test_median_interval_holds_its_coverage_for_normal_and_skewed_data(n, at_least):
    normal = coverage(st.median_interval, lambda rng: (rng.normal(7, 0.3, n),), 7.0, 20000)
    assert normal >= at_least
    # Skewed, as scores are when some runs collapse: lognormal, median 1.
    skewed = coverage(st.median_interval, lambda rng: (rng.lognormal(0, 1, n),), 1.0, 20000,
                      seed=1)
    assert skewed >= at_least


# --- the difference between two groups -------------------------------------------------

def test_shift_is_hodges_lehmann_with_moses_interval():
    a, b = [6.0, 7.0, 8.0, 9.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0]
    result = st.shift(a, b)
    differences = np.sort(np.subtract.outer(a, b).ravel())
    assert result.value == np.median(differences) == 5.0
    # n = m = 5: P(U <= 2) = 4/252 <= 0.025 < P(U <= 3) = 7/252, so the interval is
    # [d_(3), d_(23)] and its exact level 1 - 8/252.
    assert (result.low, result.high) == (differences[2], differences[22])
    assert result.confidence == 0.95 and result.text(1) == "5.0 [2.0, 8.0]"
    small = st.shift([1.0, 2, 3], [4.0, 5, 6])  # 3 against 3 cannot reach 95%
    assert (small.low, small.high) == (-5.0, -1.0)
    assert small.confidence == pytest.approx(1 - 2 / 20) and small.text(0).endswith("(90%)")
    assert st.shift([1.0], [2.0]).text(1) == "-1.0"
    assert st.shift([float("-inf")], [1.0]).text() == "–"  # no finished run on one side


def test_shift_interval_holds_its_coverage_at_five_runs():
    def draw(rng):
        return rng.normal(1.0, 1, 5), rng.normal(0, 1, 5)
    assert coverage(st.shift, draw, 1.0, 3000) >= 0.95


def test_equivalence_needs_the_ninety_percent_interval_inside_the_margin():
    a = [7.00, 7.05, 7.10, 7.15, 7.20, 7.02, 7.12, 7.08]
    b = [7.01, 7.06, 7.11, 7.14, 7.19, 7.03, 7.13, 7.09]
    assert st.equivalent(a, b, margin=0.5) is True
    assert st.equivalent(a, b, margin=0.05) is False
    assert st.equivalent([1.0, 2.0], [1.0, 2.0], margin=10) is None  # n too small


# --- P(better) --------------------------------------------------------------------------

def test_prob_better_counts_pairs_ties_half_and_diverged_runs_worst():
    assert st.prob_better([6.0, 7, 8], [1.0, 2, 3], True).value == 1.0
    assert st.prob_better([6.0, 7, 8], [1.0, 2, 3], False).value == 0.0  # FID: lower wins
    assert st.prob_better([-math.inf, 6, 7], [1.0, 2, 3], True).value == pytest.approx(6 / 9)
    assert st.prob_better([-math.inf, 1.0], [-math.inf, 1.0], True).value == 0.5
    separated = st.prob_better([6.0, 7, 8, 9, 10], [1.0, 2, 3, 4, 5], True)
    # At complete separation the interval still reaches well below 1.
    assert separated.high == 1.0 and 0.5 < separated.low < 0.9
    assert separated.text(2).startswith("1.00 [0.")


@pytest.mark.parametrize("n, sd_apart, at_least", [
    (5, 0.0, 0.93), (5, 1.0, 0.93), (5, 2.0, 0.93), (5, 3.0, 0.93),
    (4, 0.0, 0.92), (4, 3.0, 0.92), (8, 0.0, 0.93), (8, 2.0, 0.93),
    (3, 0.0, 0.88), (3, 2.0, 0.93)])
def test_prob_better_interval_holds_its_coverage(n, sd_apart, at_least):
    """Nominal 95%; at 3 runs per group about 90% when the groups are alike."""
    truth = scipy.stats.norm.cdf(sd_apart / math.sqrt(2))
    result = coverage(lambda a, b: st.prob_better(a, b, True),
                      lambda rng: (rng.normal(sd_apart, 1, n), rng.normal(0, 1, n)),
                      truth, 3000)
    assert result >= at_least


def test_prob_better_interval_with_a_fifth_of_one_groups_runs_diverged():
    def draw(rng):
        a = rng.normal(1.0, 1, 5)
        a[rng.random(5) < 0.2] = -math.inf
        return a, rng.normal(0, 1, 5)
    truth_rng = np.random.default_rng(5)
    a = truth_rng.normal(1.0, 1, 4000)
    a[truth_rng.random(4000) < 0.2] = -math.inf
    truth = np.mean(np.subtract.outer(a, truth_rng.normal(0, 1, 4000)) > 0)
    assert coverage(lambda a, b: st.prob_better(a, b, True), draw, truth, 3000) >= 0.92


# --- tests ------------------------------------------------------------------------------

def test_mann_whitney_on_known_samples_and_with_tied_diverged_runs():
    low, high = [1.0, 2, 3, 4, 5], [6.0, 7, 8, 9, 10]
    # No overlap at n = 5 + 5: exact two-sided p = 2 / C(10, 5) = 2/252, scipy's.
    assert st.mann_whitney(low, high) == pytest.approx(2 / 252) == scipy.stats.mannwhitneyu(
        low, high).pvalue
    assert st.smallest_p(5, 5) == pytest.approx(2 / 252)
    # Three diverged runs tie at -inf; the exact p is still that of no overlap, where
    # scipy's default (a normal approximation with ties) says otherwise.
    a, b = [-math.inf, -math.inf, -math.inf, 1.0, 2.0], [3.0, 4, 5, 6, 7]
    assert st.mann_whitney(a, b) == pytest.approx(2 / 252)
    assert scipy.stats.mannwhitneyu(a, b).pvalue != pytest.approx(2 / 252)
    assert st.smallest_p(2, 2) == pytest.approx(1 / 3)
    # One run against several: scipy's exact null (p >= 2 / (m + 1)), not an error.
    assert st.mann_whitney([0.0], [1.0, 2, 3, 4, 5]) == pytest.approx(2 / 6)


def test_detectable_says_what_a_test_can_find_at_this_n():
    # 5 against 5 with 6 tests (0.05 / 6): only complete separation, p = 2/252 = 0.0079.
    assert st.detectable(5, 5, 0.05 / 6) == 1.0
    # Alone at 0.05: U <= 2 (p = 0.032) still is, U = 3 (p = 0.056) is not.
    assert st.detectable(5, 5, 0.05) == pytest.approx(1 - 2 / 25)
    assert st.detectable(2, 2, 0.05) is None and st.detectable(1, 5, 0.05) is None


def test_runs_for_power_grows_as_the_difference_shrinks():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 5)
    far = st.runs_for_power(base + 3, base, 0.05)
    near = st.runs_for_power(base + 0.6, base, 0.05)
    assert far is not None and near is not None and far < near
    assert st.runs_for_power(base, base, 0.05) is None  # no difference: no n finds one


def test_paired_test_is_scipys_wilcoxon_with_failures_as_worst():
    a, b = [5.0, 6, 7, 8, 9, 3], [4.0, 5, 6, 7, 8, 4]
    result = st.paired_test(a, b, higher_is_better=True)
    expected = scipy.stats.wilcoxon(np.subtract(a, b), method="exact").pvalue
    assert result.p == pytest.approx(expected) and (result.better, result.worse) == (5, 1)
    both_failed = st.paired_test([-math.inf, 5.0, 6], [-math.inf, 4.0, 5], True)
    assert (both_failed.better, both_failed.worse, both_failed.ties) == (2, 0, 1)
    one_failed = st.paired_test([-math.inf, 5.0], [1.0, 4.0], True)
    assert (one_failed.better, one_failed.worse) == (1, 1)
    assert st.paired_test([1.0], [1.0], True).p == 1.0


def test_fisher_exact_and_benjamini_hochberg_are_scipys():
    assert st.failure_test(3, 5, 0, 5) == pytest.approx(1 / 6)
    assert st.adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])


def test_budget_curve_counts_a_failed_trial_as_the_worst_value():
    curve = st.budget_curve([1.0, 3.0, 2.0], higher_is_better=True, worst=1.0, orders=4000)
    assert list(curve.k) == [1, 2, 3]
    # E[max of k drawn without replacement]: k=1 the mean 2, k=2 (3 + 2 + 3)/3, k=3 the max.
    assert curve.mean == pytest.approx([2.0, 8 / 3, 3.0], abs=0.05)
    assert (curve.low[0], curve.high[0]) == (1.0, 3.0) and curve.low[2] == curve.high[2] == 3
    # FID: one of three settings diverged and counts as the worst FID (90), not as absent.
    failing = st.budget_curve([50.0, float("inf"), 30.0], False, worst=90.0, orders=4000)
    assert failing.mean[0] == pytest.approx((50 + 90 + 30) / 3, abs=2)
    assert failing.mean[-1] == 30.0
