"""The runs under a folder: read, counted once, grouped by their settings, and judged.

A run is identified by its resolved settings and seed (``config.run_identity``), never
by its folder's name: two folders that hold the same run count once in each analysis
they belong to (``Run.scope``: the plain groups, the random searches, each tuned re-run),
as the one that trained further. A *group* is the runs that share every setting but the
seed. Runs under a folder holding ``search.json`` whose drawn settings match one of that search's trials
are a random search's; runs under a folder holding ``tuned.json`` re-run each loss's best
search setting with fresh seeds. A run that trained every epoch is *finished*; a
finished run *failed* when it diverged, did not learn, or collapsed (``failure``).

The statistics are in ``statistics``; nothing here draws or writes (``report`` does).
"""
import collections
import dataclasses
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfgan_exp.grids import search as search_lib
from tfgan_exp.config import (G_LOSS_NAMES, NON_RESULT_SETTINGS, UsageError,
                              resolved_settings, run_identity)
from tfgan_exp.grids.grid import SEARCH_FILE, TUNED_FILE, format_value
from tfgan_exp.rundir import RunDir

REFERENCE_LOSS = "nonsat"
# Failure thresholds (README, "Studies and the report"):
# - a run whose generated images almost never lie inside the real images' k-NN manifold
#   (precision below this) did not learn: an untrained generator scores 0.00, a trained
#   one 0.25-0.35 on digits, real digits against real digits 0.9;
LEARNED_PRECISION = 0.05
# - on digits, a run that covers at most half of the 10 digits (classes_covered)
#   collapsed: one digit is 1 class, two are 2, real digits cover 10;
COLLAPSE_CLASSES = 5
# - on Inception's datasets, where classes are not the data's modes, a run whose recall
#   (the share of real images inside the generated images' manifold) is below a tenth.
COLLAPSE_RECALL = 0.1
# Settings that never name a group: the seed (runs differing only by it are repeats)
# and those that do not change what a run computes.
NOT_GROUPING = NON_RESULT_SETTINGS | {"seed"}
# Settings a tuned re-run takes from the search: they belong to its loss, not its group.
TUNED_SETTINGS = frozenset(search_lib.SEARCHED_FIELDS)


@dataclasses.dataclass
class Run:
    """One run: its settings, per-epoch records, divergence, reference and attempts."""
    dir: str
    config: dict
    metrics: List[dict]
    divergence: Optional[dict] = None
    reference: Optional[dict] = None  # reference.json: set sizes and the real anchor
    attempts: List[dict] = dataclasses.field(default_factory=list)  # provenance.json
    search_root: Optional[str] = None  # the search (its folder) this run is a trial of
    tuned_root: Optional[str] = None  # the tuned re-run (its folder) it belongs to
    duplicates: List[str] = dataclasses.field(default_factory=list)  # same run elsewhere

    @property
    def identity(self) -> tuple:
        return run_identity(self.config)

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

    def setting(self, names: Sequence[str]) -> tuple:
        return tuple(self.config.get(name) for name in names)

    @property
    def scope(self) -> tuple:
        """The analysis the run is counted in: ("search",) for a trial of any random
        search (all searches are compared together, so a trial twice is a trial once),
        ("tuned", folder) for a run of one tuned re-run, ("plain",) for the rest."""
        if self.search_root:
            return ("search",)
        if self.tuned_root:
            return ("tuned", self.tuned_root)
        return ("plain",)


def find_runs(root: str) -> List[Run]:
    """Every run under ``root`` that recorded an epoch or a divergence, in path order,
    with its search or tuned re-run marked, each counted once per analysis
    (``deduplicate``)."""
    runs = []
    for folder, _, files in sorted(os.walk(root)):
        if "config.json" not in files:
            continue
        run_dir = RunDir(folder)
        # Resolved as this version resolves them: a folder written by an older version
        # groups, and counts once, with its twin written by this one.
        run = Run(folder, resolved_settings(run_dir.saved_config()), run_dir.read_metrics(),
                  run_dir.divergence(), run_dir.reference(), run_dir.attempts())
        if run.metrics or run.divergence:
            runs.append(run)
    _mark_studies(root, runs)
    return deduplicate(runs)


def deduplicate(runs: List[Run]) -> List[Run]:
    """One Run per identity and ``scope``: the folder that trained furthest (then a
    finished one, then the first in path order); the others' folders in that scope are
    listed in its ``duplicates``. Per scope, because a search trial with the settings,
    seed and epochs of a plain run is a trial of the search's paired design as well as a
    seed of the plain group: kept once overall, it would drop out of one of the two."""
    by_identity: Dict[tuple, List[Run]] = collections.defaultdict(list)
    for run in runs:
        by_identity[(run.identity, run.scope)].append(run)
    kept = []
    for copies in by_identity.values():
        best = max(copies, key=lambda r: (r.last_epoch, r.finished, -copies.index(r)))
        best.duplicates = [r.dir for r in copies if r is not best]
        kept.append(best)
    return sorted(kept, key=lambda r: r.dir)


def _mark_studies(root: str, runs: List[Run]) -> None:
    """Marks the trials of every random search under ``root`` and the runs of every
    tuned re-run. A run belongs to the nearest folder above it that holds search.json
    or tuned.json (a tuned re-run kept inside its search's folder is not a trial); a
    search's trials are those whose searched settings equal one of its drawn ones."""
    marked = {}  # absolute folder -> (kind, folder, the drawn settings of a search)
    for folder, _, files in os.walk(root):
        if TUNED_FILE in files:
            marked[os.path.abspath(folder)] = ("tuned", folder, None)
        elif SEARCH_FILE in files:
            with open(os.path.join(folder, SEARCH_FILE)) as f:
                drawn = {tuple(trial[k] for k in search_lib.SEARCHED_FIELDS)
                         for trial in json.load(f)["trials"]}
            marked[os.path.abspath(folder)] = ("search", folder, drawn)
    top = os.path.abspath(root)
    for run in runs:
        folder = os.path.dirname(os.path.abspath(run.dir))
        while folder not in marked and folder != top and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        kind, where, drawn = marked.get(folder, (None, None, None))
        if kind == "tuned":
            run.tuned_root = where
        elif kind == "search" and run.setting(search_lib.SEARCHED_FIELDS) in drawn:
            run.search_root = where


@dataclasses.dataclass(frozen=True)
class Keys:
    """The record keys of one classifier's metrics (``inception`` or ``digits``)."""
    score: str
    fid: str
    kid: str
    precision: str
    recall: str
    label: str  # what the score is called in sentences
    classes: Optional[str] = None  # classes covered (digits only), and their KL divergence
    class_kl: Optional[str] = None

    @property
    def score_mean_10(self) -> str:
        return f"{self.score}_mean_10"

    @property
    def score_std(self) -> str:
        return f"{self.score}_std"

    @property
    def kid_std(self) -> str:
        return f"{self.kid}_std"

    @classmethod
    def for_runs(cls, runs: Sequence[Run]) -> Optional["Keys"]:
        keys = set().union(*(r for run in runs for r in run.metrics)) if runs else set()
        if "inception_score" in keys:
            return cls("inception_score", "fid", "kid", "precision", "recall",
                       "Inception Score")
        if "digits_score" in keys:
            return cls("digits_score", "digits_fid", "digits_kid", "digits_precision",
                       "digits_recall", "digits score", "digits_classes", "digits_class_kl")
        return None


def final(run: Run, key: Optional[str]) -> Optional[float]:
    """The last value of ``key`` the run recorded (None if it never did)."""
    return next((r[key] for r in reversed(run.metrics) if key in r), None) if key else None


def best(run: Run, key: str, higher_is_better: bool) -> Optional[float]:
    """The run's best value of ``key`` over its evaluations, or None: a maximum over
    noisy evaluations, biased upwards, so kept out of the verdict."""
    values = [r[key] for r in run.metrics if key in r]
    if not values:
        return None
    return max(values) if higher_is_better else min(values)


def failure(run: Run, keys: Optional[Keys]) -> str:
    """Why the run counts as a failure ("" if it does not): it diverged, has no finite
    final score, did not learn (final precision below LEARNED_PRECISION), or collapsed
    (digits: at most COLLAPSE_CLASSES of the 10 covered; else recall below
    COLLAPSE_RECALL, also for digits runs that recorded no classes)."""
    if run.divergence:
        where = run.divergence
        values = ", ".join(f"{k} = {v}" for k, v in where.get("values", {}).items())
        host = f" on {where['host']}" if where.get("host") else ""
        return f"diverged in epoch {where['epoch']}, step {where['step']} ({values}){host}"
    if keys is None:
        return ""
    score = final(run, keys.score)
    if score is None or not math.isfinite(score):
        return f"no final {keys.label}: {'none recorded' if score is None else score}"
    precision, recall = final(run, keys.precision), final(run, keys.recall)
    classes, kl = final(run, keys.classes), final(run, keys.class_kl)
    if precision is not None and precision < LEARNED_PRECISION:
        return (f"did not learn: final precision {precision:.3f} < {LEARNED_PRECISION} "
                "(almost none of its images lie among the real images')")
    if classes is not None:
        if classes <= COLLAPSE_CLASSES:
            recall_text = f"; recall {recall:.3f}" if recall is not None else ""
            return f"collapsed: covers {classes} of 10 digits (class KL {kl:.2f}{recall_text})"
    elif recall is not None and recall < COLLAPSE_RECALL:
        return f"collapsed: final recall {recall:.3f} < {COLLAPSE_RECALL}"
    return ""


def ranked(run: Run, key: str, higher_is_better: bool) -> float:
    """The run's final ``key`` for a rank test: the worst possible (-inf for a score,
    +inf for a distance) when it diverged or has no value. A collapsed run keeps its
    measured value, which ranks it low anyway; failures are tested on their own."""
    value = None if run.divergence else final(run, key)
    if value is None or not math.isfinite(value):
        return -math.inf if higher_is_better else math.inf
    return float(value)


def judged(run: Run, key: str, keys: Keys, higher_is_better: bool) -> float:
    """``ranked``, but the worst possible for any failed run too (collapsed, or did not
    learn): how a search's settings are judged (budget curves, the best setting)."""
    if failure(run, keys):
        return -math.inf if higher_is_better else math.inf
    return ranked(run, key, higher_is_better)


# --- groups ---------------------------------------------------------------------------

def varying_settings(runs: Sequence[Run], ignore=frozenset()) -> List[str]:
    """The settings, other than NOT_GROUPING and ``ignore``, on which ``runs`` differ,
    in Config order. Every run's keys count: a setting only some runs record (one this
    version does not know, kept from a newer one) differs where it is missing."""
    left_out = NOT_GROUPING | ignore
    names = dict.fromkeys(k for run in runs for k in run.config if k not in left_out)
    return [k for k in names if len({format_value(r.config.get(k)) for r in runs}) > 1]


def group_name(run: Run, varying: Sequence[str]) -> str:
    """'g_loss / d_loss', then 'key=value' for the other varying settings."""
    others = [k for k in varying if k not in ("g_loss", "d_loss", "dataset")]
    return ", ".join([run.loss] + [f"{k}={format_value(run.config.get(k))}" for k in others])


def group_runs(runs: Sequence[Run], ignore=frozenset()) -> Dict[str, Dict[str, List[Run]]]:
    """dataset -> group name -> the runs with identical settings but for the seed (and
    ``ignore``). Groups are ordered by loss (G_LOSS_NAMES order), then by name; runs by
    seed."""
    order = {name: i for i, name in enumerate(G_LOSS_NAMES)}
    by_dataset: Dict[str, List[Run]] = collections.defaultdict(list)
    for run in runs:
        by_dataset[run.config["dataset"]].append(run)
    result = {}
    for dataset, members in by_dataset.items():
        varying = varying_settings(members, ignore)
        groups: Dict[str, List[Run]] = collections.defaultdict(list)
        for run in sorted(members, key=lambda r: (order.get(r.config["g_loss"], 99),
                                                  group_name(r, varying), r.config["seed"])):
            groups[group_name(run, varying)].append(run)
        result[dataset] = dict(groups)
    return result


def comparison_sets(groups: Dict[str, List[Run]], least: int = 2
                    ) -> List[Tuple[str, Dict[str, List[Run]]]]:
    """Groups that differ only in their loss: (what they share, {loss label: runs}), for
    the sets of at least ``least`` losses.

    What they share is the rest of their group names ("" when only losses vary).
    """
    sets: Dict[str, Dict[str, List[Run]]] = collections.defaultdict(dict)
    for name, runs in groups.items():
        shared = name[len(runs[0].loss):].lstrip(", ")
        sets[shared][runs[0].loss] = runs
    return [(shared, members) for shared, members in sets.items() if len(members) >= least]


def reference_label(labels: Sequence[str], reference_loss: str) -> str:
    """The label of ``reference_loss``'s group among ``labels``, else the first (the
    report then says that the reference loss has no runs there: ``reference_note``)."""
    return next((label for label in labels if label.startswith(reference_loss + " ")),
                labels[0])


def reference_note(labels: Sequence[str], reference_loss: str) -> str:
    """'' when ``reference_loss`` is among ``labels``, else why another loss stands in."""
    chosen = reference_label(labels, reference_loss)
    if chosen.startswith(reference_loss + " "):
        return ""
    return f"{reference_loss} has no finished runs here, so {chosen} stands in"


def short_label(label: str, labels: Sequence[str]) -> str:
    """A group's loss as sentences name it: the generator's loss ('hinge'), or the whole
    label ('hinge / bce') where another of ``labels`` has the same generator loss."""
    generator = label.split(" /")[0]
    same = [other for other in labels if other.split(" /")[0] == generator]
    return generator if len(same) <= 1 else label


# --- random search --------------------------------------------------------------------

@dataclasses.dataclass
class SearchComparison:
    """The trials of one search context (every setting but the searched ones and the
    loss alike): loss label -> drawn setting (SEARCHED_FIELDS values) -> its runs."""
    dataset: str
    context: str  # the shared settings that vary across contexts ("" when one)
    trials: Dict[str, Dict[tuple, List[Run]]]
    folder: Optional[str] = None  # the search's folder, when its context holds several

    @property
    def runs(self) -> List[Run]:
        return [run for by_setting in self.trials.values() for members in by_setting.values()
                for run in members]

    @property
    def settings(self) -> List[tuple]:
        """The distinct drawn settings, in the order first met."""
        return list(dict.fromkeys(s for by_setting in self.trials.values() for s in by_setting))

    @property
    def common_settings(self) -> List[tuple]:
        """The settings every loss was tried in (finished): the paired design's. Others
        come from a trial still unfinished, or from a second search over other losses
        in the same folder and context."""
        return [s for s in self.settings
                if all(s in by_setting for by_setting in self.trials.values())]

    def values(self, key: str, keys: Keys, higher_is_better: bool) -> Dict[str, Dict[tuple, float]]:
        """loss -> setting -> the median over the setting's seeds of ``judged`` values
        (a setting with at least half its runs failed counts as failed: worst)."""
        return {loss: {setting: float(np.median([judged(r, key, keys, higher_is_better)
                                                 for r in members]))
                       for setting, members in by_setting.items()}
                for loss, by_setting in self.trials.items()}

    def worst(self, key: str, higher_is_better: bool) -> Optional[float]:
        """The worst finite final ``key`` any trial reached: a failed trial's value in
        the budget curves (None when no trial has one)."""
        values = [v for v in (final(r, key) for r in self.runs)
                  if v is not None and math.isfinite(v)]
        if not values:
            return None
        return min(values) if higher_is_better else max(values)


def search_comparisons(runs: Sequence[Run]) -> List[SearchComparison]:
    """The search trials among ``runs``, by dataset and context: trials match by every
    setting, so a search crossed with another axis, or two searches in one folder,
    never pool their trials. Searches in several folders over different losses are
    compared each on its own: every loss of a comparison met the same settings."""
    contexts: Dict[Tuple[str, str], List[Run]] = {}
    for dataset, groups in group_runs([r for r in runs if r.search_root],
                                      ignore=TUNED_SETTINGS).items():
        for shared, loss_groups in comparison_sets(groups, least=1):
            contexts.setdefault((dataset, shared), []).extend(
                run for members in loss_groups.values() for run in members)
    comparisons = []
    for (dataset, shared), members in contexts.items():
        comparison = SearchComparison(dataset, shared, _trials(members))
        folders = sorted({run.search_root for run in members})
        if len(folders) > 1 and len(comparison.common_settings) < len(comparison.settings):
            # Searches in several folders, not over the same losses: each on its own, so
            # that every loss of a comparison met the same settings.
            comparisons += [SearchComparison(dataset, shared, _trials(
                [run for run in members if run.search_root == folder]), folder)
                for folder in folders]
        else:
            comparisons.append(comparison)
    return comparisons


def _trials(runs: Sequence[Run]) -> Dict[str, Dict[tuple, List[Run]]]:
    """loss label -> drawn setting (SEARCHED_FIELDS values) -> its runs, in run order."""
    trials: Dict[str, Dict[tuple, List[Run]]] = {}
    for run in runs:
        setting = run.setting(search_lib.SEARCHED_FIELDS)
        trials.setdefault(run.loss, {}).setdefault(setting, []).append(run)
    return trials


def best_setting(values: Dict[tuple, float]) -> tuple:
    """The setting of the highest value (``SearchComparison.values``), the first on a
    tie: how the report names a loss's best and how --tuned_from picks it."""
    order = list(values)
    return max(order, key=lambda setting: (values[setting], -order.index(setting)))


def best_settings(search_dir: str) -> Tuple[Dict[tuple, Dict[str, object]], List[str]]:
    """Each loss's best drawn setting in the search under ``search_dir``, and notes.

    Returns ({search.tuned_key: {SEARCHED_FIELDS: values}}, notes). Best: the highest
    median final score over the setting's seeds, failed runs counting worst
    (``best_setting``). Raises UsageError when the folder holds no search runs, when
    some are unfinished (the best of a part is not the best), or when two contexts of
    the search would give one tuned run two settings.
    """
    found = [r for r in find_runs(search_dir) if r.search_root]
    unfinished = [os.path.relpath(r.dir, search_dir) for r in found if not r.finished]
    if unfinished:
        raise UsageError(f"--tuned_from={search_dir}: {len(unfinished)} of its search runs "
                         f"are unfinished ({', '.join(unfinished[:3])}"
                         f"{', ...' if len(unfinished) > 3 else ''}); finish the search "
                         "first (run its command again)")
    if not found:
        raise UsageError(f"--tuned_from={search_dir}: no random-search runs there (a folder "
                         f"with {SEARCH_FILE} and the runs of --search)")
    chosen, notes = {}, []
    for comparison in search_comparisons(found):
        keys = Keys.for_runs(comparison.runs)
        if keys is None:
            continue
        for loss, values in comparison.values(keys.score, keys, True).items():
            setting = best_setting(values)
            example = comparison.trials[loss][setting][0]
            key = search_lib.tuned_key(example.config)
            if key in chosen:
                raise UsageError(f"--tuned_from={search_dir}: the search trained {loss} in "
                                 "settings that differ only in --epochs, --eval_every or "
                                 "--eval_samples; a tuned re-run cannot tell which to follow")
            if not math.isfinite(values[setting]):
                notes.append(f"--tuned_from: every setting of {loss} failed in the search; "
                             "its first setting is re-run")
            chosen[key] = dict(zip(search_lib.SEARCHED_FIELDS, setting))
    return chosen, notes


def search_seeds(search_dir: str) -> set:
    """The seeds the search under ``search_dir`` trained with."""
    return {r.config["seed"] for r in find_runs(search_dir) if r.search_root}
