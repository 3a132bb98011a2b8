"""The numbers behind the report: runs grouped by their settings, intervals, tests,
failures, and the budget curves of a random search.

Statistics come from scipy, as the README explains: bootstrap confidence intervals
(``scipy.stats.bootstrap``), the two-sided Mann-Whitney U test with its null
distribution from permutations (``scipy.stats.mannwhitneyu`` with ``PermutationMethod``:
every permutation up to 7 runs per side, so exact, else 9,999 seeded random ones; correct
with ties, which diverged runs make), Fisher's exact test for failure
rates (``scipy.stats.fisher_exact``), and Benjamini-Hochberg adjusted p-values
(``scipy.stats.false_discovery_control``). The effect size is the probability that a run
of one loss beats a run of the other, U / (n m): what rliable calls the probability of
improvement, from the same U.

Nothing here draws or writes; ``report`` does.
"""
import collections
import dataclasses
import json
import math
import os
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.stats

from tfgan_exp.config import G_LOSS_NAMES, NON_RESULT_SETTINGS
from tfgan_exp.grid import SEARCH_FILE, format_value
from tfgan_exp.rundir import RunDir

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
PERMUTATIONS = 9_999  # beyond this many distinct permutations scipy draws them, seeded
ALPHA = 0.05  # decisions are taken on Benjamini-Hochberg adjusted p-values below this
# A run "collapsed" when its last evaluation's recall (the share of real images inside
# the generated images' k-NN manifold, Kynkaenniemi et al. 2019) is below this: the
# generator covers under a tenth of the real data, whatever its images look like.
COLLAPSE_RECALL = 0.1
REFERENCE_LOSS = "nonsat"
# Settings that never name a group: the seed (runs differing only by it are repeats)
# and those that do not change what a run computes.
NOT_GROUPING = NON_RESULT_SETTINGS | {"seed"}
TRIAL_IN_FOLDER = re.compile(r"(?:^|[,/])trial=(\d+)(?:[,/]|$)")


@dataclasses.dataclass
class Run:
    """One run folder: its settings, its per-epoch records, and its divergence (if any)."""
    dir: str
    config: dict
    metrics: List[dict]
    divergence: Optional[dict] = None
    trial: Optional[int] = None  # its trial number when it belongs to a random search

    @property
    def loss(self) -> str:
        return f"{self.config['g_loss']} / {self.config['d_loss']}"

    @property
    def last_epoch(self) -> int:
        return self.metrics[-1]["epoch"] if self.metrics else 0

    @property
    def finished(self) -> bool:
        """Trained all its epochs, or diverged (a result); otherwise it was stopped or is
        still running, and its numbers are not comparable with the others'."""
        return bool(self.divergence) or self.last_epoch >= self.config["epochs"]


def find_runs(root: str) -> List[Run]:
    """Every run under ``root`` that recorded an epoch or a divergence, in path order."""
    runs = []
    for folder, _, files in sorted(os.walk(root)):
        if "config.json" not in files:
            continue
        run_dir = RunDir(folder)
        run = Run(folder, run_dir.saved_config(), run_dir.read_metrics(),
                  run_dir.divergence())
        if run.metrics or run.divergence:
            runs.append(run)
    _mark_search_trials(root, runs)
    return runs


def _mark_search_trials(root: str, runs: List[Run]) -> None:
    """Sets ``trial`` on the runs of every random search under ``root`` (search.json):
    the number in the run folder's ``trial=N``, which the grid put there."""
    for folder, _, files in os.walk(root):
        if SEARCH_FILE not in files:
            continue
        with open(os.path.join(folder, SEARCH_FILE)) as f:
            numbers = {trial["trial"] for trial in json.load(f)["trials"]}
        for run in runs:
            relative = os.path.relpath(run.dir, folder)
            if relative.startswith(os.pardir):
                continue
            found = TRIAL_IN_FOLDER.search(relative)
            if found and int(found.group(1)) in numbers:
                run.trial = int(found.group(1))


@dataclasses.dataclass(frozen=True)
class Keys:
    """The record keys of one classifier's metrics (``inception`` or ``digits``)."""
    score: str
    fid: str
    kid: str
    precision: str
    recall: str
    label: str  # what the score is called in sentences

    @classmethod
    def for_runs(cls, runs: Sequence[Run]) -> Optional["Keys"]:
        keys = set().union(*(r for run in runs for r in run.metrics)) if runs else set()
        if "inception_score" in keys:
            return cls("inception_score", "fid", "kid", "precision", "recall",
                       "Inception Score")
        if "digits_score" in keys:
            return cls("digits_score", "digits_fid", "digits_kid", "digits_precision",
                       "digits_recall", "digits score")
        return None


def final(run: Run, key: str) -> Optional[float]:
    """The last value of ``key`` the run recorded (None if it never did)."""
    return next((r[key] for r in reversed(run.metrics) if key in r), None)


def best(run: Run, key: str, higher_is_better: bool) -> Optional[float]:
    """The run's best value of ``key``, or None."""
    values = [r[key] for r in run.metrics if key in r]
    if not values:
        return None
    return max(values) if higher_is_better else min(values)


def failure(run: Run, keys: Optional[Keys]) -> str:
    """Why the run counts as a failure ("" if it does not): diverged, or collapsed."""
    if run.divergence:
        where = run.divergence
        values = ", ".join(f"{k} = {v}" for k, v in where.get("values", {}).items())
        return f"diverged in epoch {where['epoch']}, step {where['step']} ({values})"
    recall = final(run, keys.recall) if keys else None
    if recall is not None and recall < COLLAPSE_RECALL:
        return f"collapsed: final recall {recall:.3f} < {COLLAPSE_RECALL}"
    return ""


# --- groups ---------------------------------------------------------------------------

def varying_settings(runs: Sequence[Run]) -> List[str]:
    """The settings, other than NOT_GROUPING, on which ``runs`` differ, in Config order."""
    names = [k for k in runs[0].config if k not in NOT_GROUPING] if runs else []
    return [k for k in names if len({format_value(r.config.get(k)) for r in runs}) > 1]


def group_name(run: Run, varying: Sequence[str]) -> str:
    """'g_loss / d_loss', then 'key=value' for the other varying settings."""
    others = [k for k in varying if k not in ("g_loss", "d_loss", "dataset")]
    parts = [run.loss] + [f"{k}={format_value(run.config.get(k))}" for k in others]
    return ", ".join(parts)


def group_runs(runs: Sequence[Run]) -> Dict[str, Dict[str, List[Run]]]:
    """dataset -> group name -> runs with identical settings but for the seed.

    Groups are ordered by loss (G_LOSS_NAMES order), then by name; runs by seed.
    """
    order = {name: i for i, name in enumerate(G_LOSS_NAMES)}
    by_dataset: Dict[str, List[Run]] = collections.defaultdict(list)
    for run in runs:
        by_dataset[run.config["dataset"]].append(run)
    result = {}
    for dataset, members in by_dataset.items():
        varying = varying_settings(members)
        groups: Dict[str, List[Run]] = collections.defaultdict(list)
        for run in sorted(members, key=lambda r: (order.get(r.config["g_loss"], 99),
                                                  group_name(r, varying),
                                                  r.config["seed"])):
            groups[group_name(run, varying)].append(run)
        result[dataset] = dict(groups)
    return result


def comparison_sets(groups: Dict[str, List[Run]]) -> List[Tuple[str, Dict[str, List[Run]]]]:
    """Groups that differ only in their loss: (what they share, {loss label: runs}).

    What they share is the rest of their group names ("" when only losses vary).
    """
    sets: Dict[str, Dict[str, List[Run]]] = collections.defaultdict(dict)
    for name, runs in groups.items():
        shared = name[len(runs[0].loss):].lstrip(", ")
        sets[shared][runs[0].loss] = runs
    return [(shared, members) for shared, members in sets.items() if len(members) > 1]


# --- statistics -----------------------------------------------------------------------

@dataclasses.dataclass
class Interval:
    """A mean over runs and its 95% bootstrap interval (percentile method)."""
    mean: float
    low: float
    high: float
    n: int

    def text(self, decimals: int = 3) -> str:
        if self.n == 0:
            return "–"
        if self.n == 1 or not np.isfinite(self.low):
            return f"{self.mean:.{decimals}f}"
        return f"{self.mean:.{decimals}f} [{self.low:.{decimals}f}, {self.high:.{decimals}f}]"


def interval(values: Sequence[Optional[float]], seed: int = 0) -> Interval:
    """Mean of the finite ``values`` and its 95% bootstrap confidence interval.

    scipy's bootstrap, percentile method, 10,000 resamples, seeded: the same runs give
    the same interval. One value has no interval; identical values have a zero-width one.
    """
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], float)
    if len(finite) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if len(finite) == 1:
        return Interval(float(finite[0]), float("nan"), float("nan"), 1)
    if np.all(finite == finite[0]):
        return Interval(float(finite[0]), float(finite[0]), float(finite[0]), len(finite))
    result = scipy.stats.bootstrap((finite,), np.mean, confidence_level=CONFIDENCE,
                                   n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                                   rng=np.random.default_rng(seed))
    ci = result.confidence_interval
    return Interval(float(finite.mean()), float(ci.low), float(ci.high), len(finite))


@dataclasses.dataclass
class Comparison:
    """Mann-Whitney U of sample a against sample b, two-sided."""
    u: float
    p: float
    prob_a_better: float  # P(a beats b) + P(tie) / 2 = U / (n m), "better" by the metric
    n_a: int
    n_b: int
    smallest_p: float  # the smallest two-sided p any outcome could give at these n


def compare(a: Sequence[float], b: Sequence[float], higher_is_better: bool) -> Comparison:
    """Two-sided Mann-Whitney U test of ``a`` against ``b`` (scipy, permutation null).

    A value of -inf (score) or +inf (FID) stands for a run that diverged: it ranks below
    every run that finished, which a rank test allows. Such runs tie with each other, and
    with ties scipy's default falls back to a normal approximation, poor at n = 5; the
    permutation null is exact at small n with or without ties.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not higher_is_better:  # U then counts the pairs in which a is *better*
        a, b = -a, -b
    method = scipy.stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=0)
    result = scipy.stats.mannwhitneyu(a, b, alternative="two-sided", method=method)
    n_a, n_b = len(a), len(b)
    # Beyond PERMUTATIONS distinct orders scipy samples them: p is then at least
    # 2 / (PERMUTATIONS + 1), whatever the data.
    smallest = min(1.0, max(2.0 / math.comb(n_a + n_b, n_a), 2.0 / (PERMUTATIONS + 1)))
    return Comparison(float(result.statistic), float(result.pvalue),
                      float(result.statistic) / (n_a * n_b), n_a, n_b, smallest)


def failure_test(failed_a: int, n_a: int, failed_b: int, n_b: int) -> float:
    """Fisher's exact test (two-sided) of two failure rates; its p-value."""
    return float(scipy.stats.fisher_exact([[failed_a, n_a - failed_a],
                                           [failed_b, n_b - failed_b]]).pvalue)


def adjusted(p_values: Sequence[float]) -> List[float]:
    """Benjamini-Hochberg adjusted p-values (scipy), for a family of comparisons."""
    if not p_values:
        return []
    return [float(p) for p in scipy.stats.false_discovery_control(np.asarray(p_values))]


def ranked_values(runs: Sequence[Run], pick: Callable[[Run], Optional[float]],
                  higher_is_better: bool) -> List[float]:
    """``pick(run)`` for each run, for a rank test; a run that diverged ranks worst."""
    worst = -math.inf if higher_is_better else math.inf
    values = []
    for run in runs:
        value = None if run.divergence else pick(run)
        values.append(value if value is not None and np.isfinite(value) else worst)
    return values


# --- random search --------------------------------------------------------------------

@dataclasses.dataclass
class BudgetCurve:
    """Best value found after k = 1..N settings, over random orders of the trials."""
    k: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def budget_curve(values: Sequence[float], higher_is_better: bool, orders: int = 1000,
                 seed: int = 0) -> BudgetCurve:
    """The best of the first k trials, for k = 1..N, as Lucic et al. 2018 (figure 4) draw it.

    The trials' order is resampled (``orders`` random permutations): the curve is the
    mean best-so-far, the band its 2.5th-97.5th percentiles. No library offers this
    curve; it is a running maximum over permutations, written here with numpy.
    A non-finite value (a diverged trial) never counts as the best.
    """
    values = np.asarray(values, float)
    worst = -np.inf if higher_is_better else np.inf
    values = np.where(np.isfinite(values), values, worst)
    rng = np.random.default_rng(seed)
    permuted = np.stack([values[rng.permutation(len(values))] for _ in range(orders)])
    running = (np.maximum if higher_is_better else np.minimum).accumulate(permuted, axis=1)
    running = np.where(np.isfinite(running), running, np.nan)
    with np.errstate(all="ignore"):
        mean = np.nanmean(running, axis=0)
    low, high = np.nanpercentile(running, [2.5, 97.5], axis=0)
    return BudgetCurve(np.arange(1, len(values) + 1), mean, low, high)
