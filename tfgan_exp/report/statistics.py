"""The report's statistics, for the 1-10 runs per group that GAN studies have.

Every estimate comes with an interval whose coverage at such n is known, and says its
confidence: where n is too small for 95%, the widest interval the data allow is given
with its own, lower, confidence instead of a "95%" it does not have.

- ``median_interval``: a group's median with the distribution-free order-statistic
  interval (binomial, as ``scipy.stats.quantile_test`` builds it): exact for any
  continuous distribution, at least 95% from 6 runs, 93.8% at 5 runs as [min, max].
- ``shift``: the Hodges-Lehmann difference between two groups (the median of all
  pairwise differences) with Moses's interval, the set of shifts the exact two-sided
  Mann-Whitney test does not reject (critical values from scipy's exact null).
- ``prob_better``: P(a run of A beats a run of B) = U / (n m) (rliable's "probability
  of improvement") with Newcombe's (2006) method-5 score interval. No maintained
  library offers an interval for it that holds at 3-10 runs (simulated here: scipy's
  percentile and BCa bootstraps and the Brunner-Munzel interval cover 37-64% when the
  groups are 2 sd apart at n = 5, Newcombe's 95%), so it is written here.
- ``mann_whitney``: the two-sided test with its null from permutations (exact up to 7
  runs per side, correct with ties such as diverged runs at -inf);
  ``paired_test``: Wilcoxon's signed-rank test, permutation null, for paired designs.
- ``detectable``: the P(better) a test must reach to be significant at this n after
  the correction; ``runs_for_power``: runs per group for 80% power, simulated.
- ``failure_test`` (Fisher's exact), ``adjusted`` (Benjamini-Hochberg), and
  ``budget_curve`` (Lucic et al. 2018's best-of-k curve).

The coverage of every interval here is simulated by ``tests/test_statistics.py``.
"""
import dataclasses
import functools
import math
from typing import List, Optional, Sequence

import numpy as np
import scipy.optimize
import scipy.stats

CONFIDENCE = 0.95
ALPHA = 0.05  # significance, after Benjamini-Hochberg correction within a family
PERMUTATIONS = 9_999  # beyond this many distinct permutations scipy draws them, seeded
POWER = 0.8
POWER_DRAWS = 1000
POWER_MAX_RUNS = 200


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A value with its interval [low, high] of the stated ``confidence``.

    ``confidence`` is at least CONFIDENCE when n allows it; below it, the interval is
    the widest the data give and ``confidence`` is its exact level. No interval (one
    run, or none): ``low``, ``high`` and ``confidence`` are NaN.
    """
    value: float
    low: float = math.nan
    high: float = math.nan
    confidence: float = math.nan
    n: int = 0

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low)

    def text(self, decimals: int = 3, scale: float = 1.0, stated: float = CONFIDENCE) -> str:
        """'7.10 [6.86, 7.29]', with '(93.8%)' after an interval whose confidence is below
        ``stated`` (the level a table states once for its row)."""
        if math.isnan(self.value):
            return "–"
        text = f"{self.value * scale:.{decimals}f}"
        if self.has_interval:
            text += f" [{self.low * scale:.{decimals}f}, {self.high * scale:.{decimals}f}]"
            stated = CONFIDENCE if math.isnan(stated) else min(stated, CONFIDENCE)
            if self.confidence < stated - 1e-9:
                text += f" ({percent(self.confidence)})"
        return text


def percent(fraction: float) -> str:
    """0.9375 -> '93.8%', 0.5 -> '50%'."""
    return f"{100 * fraction:.3g}%"


def finite(values: Sequence[Optional[float]]) -> np.ndarray:
    """The finite values of ``values`` (None, NaN and infinities dropped), float64."""
    return np.array([v for v in values if v is not None and np.isfinite(v)], float)


# --- one group --------------------------------------------------------------------------

def median_interval(values: Sequence[Optional[float]]) -> Estimate:
    """Median of the finite ``values`` and its distribution-free interval.

    The interval between the r-th smallest and the r-th largest value covers the
    median with probability 1 - 2 P(Binomial(n, 1/2) < r), for any continuous
    distribution: the narrowest of at least 95% (n >= 6; the same interval as scipy's
    ``quantile_test``, which the tests check), else the widest, [min, max], with its
    own confidence 1 - 2^(1-n): 93.8% at 5 runs, 87.5% at 4, 75% at 3, 50% at 2.
    """
    x = np.sort(finite(values))
    n = len(x)
    if n == 0:
        return Estimate(math.nan)
    median = float(np.median(x))
    if n == 1:
        return Estimate(median, n=1)
    rank, level = _median_rank(n)
    return Estimate(median, float(x[rank - 1]), float(x[n - rank]), level, n)


@functools.lru_cache(maxsize=None)
def _median_rank(n: int) -> tuple:
    """(r, level): the largest r whose interval [x_(r), x_(n+1-r)] has a level of at
    least CONFIDENCE (reported as CONFIDENCE), else r = 1 with its lower level."""
    def level(rank):
        return 1.0 - 2.0 * float(scipy.stats.binom.cdf(rank - 1, n, 0.5))
    rank = 1
    while rank + 1 <= (n + 1) // 2 and level(rank + 1) >= CONFIDENCE:
        rank += 1
    return rank, min(level(rank), CONFIDENCE)


# --- two groups -------------------------------------------------------------------------

def _u_cdf(u: int, n: int, m: int) -> float:
    """P(U <= u) under the null of the Mann-Whitney U of samples of n and m, no ties:
    scipy's exact null distribution, read through two samples whose U is exactly u."""
    if u < 0:
        return 0.0
    y = np.arange(m, dtype=float)
    counts = [min(m, max(0, u - m * i)) for i in range(n)]  # each x_i above counts[i] y's
    x = np.array(counts, float) - 0.5
    return float(scipy.stats.mannwhitneyu(x, y, alternative="less", method="exact").pvalue)


@functools.lru_cache(maxsize=None)
def _critical_count(n: int, m: int, confidence: float) -> tuple:
    """(C, level): the largest C >= 1 with P(U <= C - 1) <= (1 - confidence) / 2, and
    the two-sided interval's exact level 1 - 2 P(U <= C - 1); C = 0 when none exists."""
    tail = (1.0 - confidence) / 2.0
    count = 0
    while count < n * m // 2 and _u_cdf(count, n, m) <= tail + 1e-12:
        count += 1
    return count, 1.0 - 2.0 * _u_cdf(count - 1, n, m)


def shift(a: Sequence[Optional[float]], b: Sequence[Optional[float]],
          confidence: float = CONFIDENCE) -> Estimate:
    """Hodges-Lehmann estimate of how much a's values exceed b's (a - b), with Moses's
    interval, over the finite values.

    The interval [d_(C), d_(nm+1-C)] of the sorted pairwise differences d is exact
    under a shift model (no ties); where n is too small for ``confidence`` (3 runs
    against 3 for 95%), it is [min d, max d] with its own level, 1 - 2 / C(n+m, n).
    """
    a, b = finite(a), finite(b)
    if not len(a) or not len(b):
        return Estimate(math.nan)
    differences = np.sort(np.subtract.outer(a, b).ravel())
    value = float(np.median(differences))
    n, m = len(a), len(b)
    if n * m == 1:
        return Estimate(value, n=1)
    count, level = _critical_count(n, m, confidence)
    if count == 0:
        low, high = differences[0], differences[-1]
        level = 1.0 - 2.0 / math.comb(n + m, n)
    else:
        low, high = differences[count - 1], differences[-count]
    return Estimate(value, float(low), float(high), min(level, confidence), min(n, m))


def equivalent(a, b, margin: float) -> Optional[bool]:
    """Two one-sided tests at 5%: True when the 90% interval of the shift a - b lies
    inside (-margin, margin), False when it does not, None when n cannot give a 90%
    interval (then equivalence cannot be shown)."""
    estimate = shift(a, b, confidence=1.0 - 2 * ALPHA)
    if not estimate.has_interval or estimate.confidence < 1.0 - 2 * ALPHA - 1e-9:
        return None
    return -margin < estimate.low and estimate.high < margin


def _wins(a: np.ndarray, b: np.ndarray) -> float:
    """U of a against b: pairs in which a is larger, ties counted half."""
    with np.errstate(invalid="ignore"):  # -inf - -inf: a tie, counted below
        difference = np.subtract.outer(a, b)
    return float(np.sum(difference > 0)
                 + 0.5 * np.sum(np.isnan(difference) | (difference == 0)))


def prob_better(a: Sequence[float], b: Sequence[float], higher_is_better: bool,
                confidence: float = CONFIDENCE) -> Estimate:
    """P(a run of a is better than one of b) + P(tie) / 2, with Newcombe's interval.

    ``a`` and ``b`` may hold -inf (score) or +inf (FID) for runs that diverged: they
    rank worst, tied with each other. Newcombe's method 5 (Stat. Med. 2006) solves
    (theta_hat - theta)^2 = z^2 V(theta) with Hanley and McNeil's variance at
    N* = (n + m)/2; it stays inside [0, 1] and keeps its level at complete separation.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not higher_is_better:
        a, b = -a, -b
    n, m = len(a), len(b)
    if not n or not m:
        return Estimate(math.nan)
    theta = _wins(a, b) / (n * m)
    z = scipy.stats.norm.ppf(0.5 + confidence / 2)
    n_star = (n + m) / 2.0

    def gap(t):  # > 0 outside the interval
        variance = t * (1 - t) / (n * m) * (1 + (n_star - 1) * ((1 - t) / (2 - t)
                                                                 + t / (1 + t)))
        return (theta - t) ** 2 - z * z * variance

    eps = 1e-12
    low = 0.0 if theta <= eps or gap(0.0) <= 0 else scipy.optimize.brentq(
        gap, 0.0, theta - eps)
    high = 1.0 if theta >= 1 - eps or gap(1.0) <= 0 else scipy.optimize.brentq(
        gap, theta + eps, 1.0)
    return Estimate(theta, float(low), float(high), confidence, min(n, m))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U test of ``a`` against ``b``, null from permutations: its p.

    -inf and +inf (diverged runs) rank below and above every finite value and tie with
    each other; with ties scipy's default falls back to a normal approximation, poor at
    n = 5, where the permutation null is exact (all C(n+m, n) orders up to 7 runs per
    side, else PERMUTATIONS seeded draws).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    # scipy's permutation test needs two runs per side; with one, its exact null (which
    # treats ties as broken) gives p >= 2 / (m + 1), never significant below 39 runs.
    method = (scipy.stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=0)
              if min(len(a), len(b)) > 1 else "exact")
    result = scipy.stats.mannwhitneyu(a, b, alternative="two-sided", method=method)
    return float(result.pvalue)


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p the permutation Mann-Whitney test can give at n and m:
    2 / C(n+m, n) (complete separation), or 2 / (PERMUTATIONS + 1) once it samples."""
    return min(1.0, max(2.0 / math.comb(n + m, n), 2.0 / (PERMUTATIONS + 1)))


def detectable(n: int, m: int, threshold: float) -> Optional[float]:
    """The P(better) that a Mann-Whitney test at n and m must reach, at or below
    ``1 - x`` or at or above ``x``, for p < ``threshold``; None if no outcome can.

    Exact null (no ties); x = 1 means only complete separation can be significant.
    """
    if smallest_p(n, m) >= threshold:
        return None
    count = 0  # the largest U (pairs won by the worse side) still significant
    while count + 1 < n * m / 2 and 2 * _u_cdf(count + 1, n, m) < threshold:
        count += 1
    return 1.0 - count / (n * m)


def runs_for_power(a: Sequence[float], b: Sequence[float], threshold: float,
                   power: float = POWER, draws: int = POWER_DRAWS,
                   max_runs: int = POWER_MAX_RUNS, seed: int = 0) -> Optional[int]:
    """Runs per group at which a two-sided Mann-Whitney test at ``threshold`` would
    detect the difference between ``a`` and ``b`` with probability ``power``, if the
    true difference were the one these runs show (a plug-in estimate: with few runs
    that difference is itself uncertain).

    Simulated: both groups are resampled from these runs (their empirical
    distributions, -inf/+inf for diverged runs included), ``draws`` times per size, and
    tested with scipy's exact null up to 7 runs per group (which treats ties as broken)
    and its normal approximation with the tie correction beyond. The report's own test
    keeps ties in its permutation null, which at 7 runs costs 20 s per 1,000 draws here;
    the two agreed to within a percentage point of power at 5 and 7 runs in a check
    on a sample with ties. None when even ``max_runs`` per group would not do (or the
    groups do not differ at all).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)

    def achieved(size: int) -> float:
        first = rng.choice(a, (draws, size))
        second = rng.choice(b, (draws, size))
        method = "exact" if size <= 7 else "asymptotic"
        with np.errstate(invalid="ignore", divide="ignore"):
            p = scipy.stats.mannwhitneyu(first, second, axis=1, method=method).pvalue
        return float(np.mean(np.nan_to_num(p, nan=1.0) < threshold))

    if achieved(max_runs) < power:
        return None
    low, high = 2, max_runs  # power grows with the size: bisect for the smallest
    while low < high:
        middle = (low + high) // 2
        if achieved(middle) >= power:
            high = middle
        else:
            low = middle + 1
    return low


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """Wilcoxon's signed-rank test over paired values: p, and how the pairs fell."""
    p: float
    better: int  # pairs in which a is better
    worse: int
    ties: int


def paired_test(a: Sequence[float], b: Sequence[float], higher_is_better: bool) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of a against b, pair by pair, with its null
    from sign permutations (exact up to 13 non-tied pairs, else PERMUTATIONS draws).

    Values of -inf (score) or +inf (FID) are failures: a failure against a finished
    value is the largest difference, and two failures are a tie; ties are dropped
    (Wilcoxon's convention).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not higher_is_better:
        a, b = -a, -b
    with np.errstate(invalid="ignore"):
        difference = np.where(a == b, 0.0, a - b)  # inf - inf is a tie, not NaN
    better, worse = int(np.sum(difference > 0)), int(np.sum(difference < 0))
    ties = len(difference) - better - worse
    if better + worse < 2:  # one untied pair: both of its signs are as extreme, p = 1
        return PairedTest(1.0, better, worse, ties)  # (scipy refuses fewer than two)
    method = scipy.stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=0)
    result = scipy.stats.wilcoxon(difference, zero_method="wilcox", method=method)
    return PairedTest(float(result.pvalue), better, worse, ties)


def failure_test(failed_a: int, n_a: int, failed_b: int, n_b: int) -> float:
    """Fisher's exact test (two-sided) of two failure rates; its p-value."""
    return float(scipy.stats.fisher_exact([[failed_a, n_a - failed_a],
                                           [failed_b, n_b - failed_b]]).pvalue)


def adjusted(p_values: Sequence[float]) -> List[float]:
    """Benjamini-Hochberg adjusted p-values (scipy), for a family of comparisons."""
    if not len(p_values):
        return []
    return [float(p) for p in scipy.stats.false_discovery_control(np.asarray(p_values))]


# --- random search ----------------------------------------------------------------------

@dataclasses.dataclass
class BudgetCurve:
    """Best value found after k = 1..N settings, over random orders of the trials."""
    k: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def budget_curve(values: Sequence[float], higher_is_better: bool, worst: float,
                 orders: int = 1000, seed: int = 0) -> BudgetCurve:
    """The best of the first k trials, for k = 1..N, as Lucic et al. 2018 (figure 4).

    A trial that failed (its value not finite: diverged, or set so for a collapse)
    counts as ``worst``, the worst value any trial of the comparison reached, so a
    loss that fails in half its settings pays for it at small budgets. The trials'
    order is resampled (``orders`` random permutations): the curve is the mean best so
    far, the band its 2.5th-97.5th percentiles. A running maximum over permutations:
    no library offers it.
    """
    values = np.asarray(values, float)
    values = np.where(np.isfinite(values), values, worst)
    rng = np.random.default_rng(seed)
    permuted = np.stack([values[rng.permutation(len(values))] for _ in range(orders)])
    running = (np.maximum if higher_is_better else np.minimum).accumulate(permuted, axis=1)
    low, high = np.percentile(running, [2.5, 97.5], axis=0)
    return BudgetCurve(np.arange(1, len(values) + 1), running.mean(axis=0), low, high)
