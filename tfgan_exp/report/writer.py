"""The comparison report: ``python -m tfgan_exp.report DIR`` -> DIR/report/.

Reads every run under DIR (any folder holding config.json and metrics.jsonl or
diverged.json), counts each run once whatever its folder is called, and writes
``report.md`` with its PNG figures, per dataset:

- a verdict per set of groups that differ only in their loss: each loss against a
  reference loss (``--reference_loss``, default nonsat) by the size of the difference
  with its interval (Hodges-Lehmann shift, P(better)), the tests, what the tests could
  detect at this n, how many runs would detect the difference seen, and, with
  ``--equivalence_margin``, whether the losses are equivalent;
- a table of groups (runs with the same settings but for the seed) with each metric's
  median and its interval, beside a real-against-real anchor row, and every run's own
  values;
- the failed runs (diverged, did not learn, collapsed) and why;
- for a random search (``--search``): the settings tried, the paired comparison of the
  losses setting by setting, and the best value found against the number of settings
  tried (Lucic et al. 2018, fig. 4); for a tuned re-run (``--tuned_from``), the same
  verdict as above;
- the software and machines the runs were made with.

Any grid works, one run per group too. The statistics are in ``statistics``, the runs
and groups in ``analysis``, the figures in ``figures``; this module writes the text.
"""
import collections
import json
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import flags

import tfgan_exp  # noqa: F401
from tfgan_exp.report import analysis, figures
from tfgan_exp.grids import search as search_lib
from tfgan_exp.report import statistics as st
from tfgan_exp.report.analysis import Keys, Run
from tfgan_exp.command_line import fail, run_command
from tfgan_exp.config import G_LOSS_NAMES, UsageError
from tfgan_exp.grids.grid import format_value
from tfgan_exp.rundir import write_atomically

F = flags.FLAGS
flags.DEFINE_string("reference_loss", analysis.REFERENCE_LOSS, "Generator loss every other "
                    "loss is compared with in the verdict (when the runs have it).")
flags.DEFINE_float("equivalence_margin", 0.0, "A difference in the final score smaller "
                   "than this (in the score's units, > 0) is of no practical importance: "
                   "two losses are called equivalent when the 90% interval of their "
                   "difference lies inside +-margin (two one-sided tests at 5%). 0 = no "
                   "equivalence claims.")

HOW_TO_READ = f"""How to read it:

- A *run* is one setting and seed; two folders that hold the same run count once (in
  each analysis: a search trial may also be a seed of a plain group). A *group* is the
  runs that share every setting but the seed.
- Values are a group's **median** with a distribution-free interval (between two order
  statistics) of at least 95% confidence; below 6 runs no such interval exists, and the
  widest one, [min, max], is shown with its own confidence (5 runs: 93.8%, 4: 87.5%, 3:
  75%, 2: 50%). Runs that diverged are left out of the medians and shifts (the table of
  every run lists their last values).
- A run *failed* if it diverged, did not learn (final precision below
  {analysis.LEARNED_PRECISION}: almost none of its images lie among the real ones), or
  collapsed (digits: it covers at most {analysis.COLLAPSE_CLASSES} of the 10 digits;
  other datasets: final recall below {analysis.COLLAPSE_RECALL}).
- The verdict compares each loss with the reference by the *shift* (Hodges–Lehmann: the
  median of all differences between a run of each, with Moses's exact interval) and
  *P(better)* (the probability that a run of the loss beats a run of the reference,
  ties counted half, with Newcombe's interval); by a two-sided Mann–Whitney U test on
  the final values (a diverged run ranks worst; exact null from permutations up to 7
  runs per side); and failure rates by Fisher's exact test. A difference is claimed when
  its Benjamini–Hochberg adjusted p-value is below {st.ALPHA}, adjusted over the tests of
  one paragraph (each paragraph is a family of its own; across paragraphs and sections
  the error rate is not controlled). "No difference detected" means the test could not
  tell, not that the losses are equal: only an equivalence margin
  (`--equivalence_margin`) can show that.
- The intervals' coverage at 3–8 runs is simulated in `tests/test_statistics.py`: the
  median's and the shift's are exact by construction; P(better)'s (Newcombe's, nominal
  95%) covered at least 92% from 4 runs per group and about 90% at 3.
- "Best" values are maxima over a run's noisy evaluations, biased upwards: shown for
  reference, never used in the verdict.
- What reproduces where: the same command on the same machine and software with
  `--deterministic` repeats a run bit for bit; on another CPU, GPU or TensorFlow version
  the same seeds take other paths, and only the statistics are comparable. "Made with"
  lists what these runs were made with."""


# --- numbers as text ----------------------------------------------------------------------

def _value(value: Optional[float], decimals: int, scale: float = 1.0) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value * scale:.{decimals}f}"


def _whole(text: str) -> str:
    """'10.0 [3.0, 10.0]' -> '10 [3, 10]': counts printed as counts (a median of an even
    number of runs may be a half, which keeps its decimal)."""
    return re.sub(r"(\d+)\.0\b", r"\1", text)


def _failed_or(value: float, decimals: int) -> str:
    """A search setting's value: 'failed' for the worst (a failed setting)."""
    return _value(value, decimals) if math.isfinite(value) else "failed"


def _signed(estimate: st.Estimate, decimals: int, stated: float = st.CONFIDENCE) -> str:
    """A shift with its sign: '+1.20 [0.30, 2.00]'."""
    text = estimate.text(decimals, stated=stated)
    return text if text.startswith("-") or text == "–" else "+" + text


def _kid_scale(keys: Keys) -> float:
    """Inception KID is printed in units of 1e-3, as papers do; the digits classifier's
    features have another scale, so its KID is printed as it is."""
    return 1e3 if keys.kid == "kid" else 1.0


def _kid_title(keys: Keys) -> str:
    return "KID ×10³" if _kid_scale(keys) != 1.0 else "KID"


# --- the verdict ----------------------------------------------------------------------------

def _min_runs(threshold: float) -> int:
    """The fewest runs per loss at which a test can reach p < ``threshold``."""
    n = 2
    while st.smallest_p(n, n) >= threshold and n < 1000:
        n += 1
    return n


def _compare_groups(runs: List[Run], ref_runs: List[Run], keys: Keys) -> dict:
    found = {}
    for metric, key, higher in (("score", keys.score, True), ("fid", keys.fid, False)):
        ranked = [analysis.ranked(r, key, higher) for r in runs]
        ref_ranked = [analysis.ranked(r, key, higher) for r in ref_runs]
        found[metric] = {
            "test": st.mann_whitney(ranked, ref_ranked),
            "shift": st.shift(ranked, ref_ranked),
            "better": st.prob_better(ranked, ref_ranked, higher),
            "ranked": (ranked, ref_ranked)}
    found["failed"] = sum(bool(analysis.failure(r, keys)) for r in runs)
    found["ref_failed"] = sum(bool(analysis.failure(r, keys)) for r in ref_runs)
    found["failures_p"] = st.failure_test(found["failed"], len(runs), found["ref_failed"],
                                          len(ref_runs))
    return found


def verdict(sets, keys: Keys, reference_loss: str, margin: float = 0.0) -> List[str]:
    """One paragraph per set of groups that differ only in their loss
    (``analysis.comparison_sets``)."""
    paragraphs = []
    for shared, loss_groups in sets:
        labels = list(loss_groups)
        reference = analysis.reference_label(labels, reference_loss)
        stands_in = analysis.reference_note(labels, reference_loss)
        ref_runs = loss_groups[reference]
        config = ref_runs[0].config
        epochs = config["epochs"]
        context = ", ".join([f"{config['dataset']}, {epochs} epoch{'s' * (epochs != 1)}"]
                            + ([shared] if shared else []))
        others = [label for label in labels if label != reference]
        findings = [_compare_groups(loss_groups[label], ref_runs, keys) for label in others]
        tests = 3 * len(others)
        p_values = [p for found in findings
                    for p in (found["score"]["test"], found["fid"]["test"],
                              found["failures_p"])]
        adjusted = st.adjusted(p_values)
        sentences = []
        for number, (label, found) in enumerate(zip(others, findings)):
            p_adj = dict(zip(("score", "fid", "failures"), adjusted[3 * number:3 * number + 3]))
            sentences.append(_loss_sentence(label, loss_groups[label], reference, ref_runs,
                                            found, p_adj, keys, margin, labels))
        power = _power_sentence(others, findings, loss_groups, reference, tests, keys)
        made_with = _provenance_warning([r for runs in loss_groups.values() for r in runs])
        paragraphs.append(
            f"**{context}** ({_n_text(loss_groups)}; reference: {reference}"
            + (f": {stands_in}" if stands_in else "") + ").\n\n"
            + "\n".join(f"- {sentence}" for sentence in sentences)
            + f"\n\n{power}" + (f"\n\n{made_with}" if made_with else ""))
    return paragraphs


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _n_text(loss_groups: Dict[str, List[Run]]) -> str:
    sizes = sorted({len(runs) for runs in loss_groups.values()})
    return ("n = " + "–".join(str(n) for n in sizes)
            + (" run" if sizes == [1] else " runs") + " per loss")


def _loss_sentence(label, runs, reference, ref_runs, found, p_adj, keys: Keys,
                   margin: float, labels: Sequence[str]) -> str:
    short, ref_short = (analysis.short_label(name, labels) for name in (label, reference))
    n, m = len(runs), len(ref_runs)
    parts, claims = [], []
    for metric, name, decimals in (("score", f"final {keys.label}", 2),
                                   ("fid", "final FID", 1)):
        result = found[metric]
        ranked, ref_ranked = result["ranked"]
        if n == 1 and m == 1:  # one run each: the two values, no statistics
            own, theirs = (r[0] if math.isfinite(r[0]) else None for r in result["ranked"])
            parts.append(f"{name} {_value(own, decimals)} against {_value(theirs, decimals)}")
            continue
        measured = (sum(map(math.isfinite, ranked)), sum(map(math.isfinite, ref_ranked)))
        if min(measured) == 0:
            shift = "no shift (no run with a value on one side)"
        elif measured != (n, m):
            shift = (f"shift over the {measured[0]} and {measured[1]} runs with a value "
                     f"{_signed(result['shift'], decimals)}")
        else:
            shift = f"shift {_signed(result['shift'], decimals)}"
        parts.append(f"{name}: {shift}, "
                     f"P({short} better) = {result['better'].text(2)}, Mann–Whitney "
                     f"p = {result['test']:.3g} (adjusted {p_adj[metric]:.3g})")
        if p_adj[metric] < st.ALPHA:
            better = result["better"].value > 0.5
            claims.append(f"{'better' if better else 'worse'} {name.split('final ')[1]}")
    parts.append(f"failed in {found['failed']} of {n} runs against {found['ref_failed']} of "
                 f"{m} (Fisher p = {found['failures_p']:.3g}, adjusted "
                 f"{p_adj['failures']:.3g})")
    if p_adj["failures"] < st.ALPHA:
        claims.append("fails more often" if found["failed"] / n > found["ref_failed"] / m
                      else "fails less often")
    if claims:
        listed = ", ".join(claims)
        conclusion = f"**{listed[0].upper() + listed[1:]}** than {ref_short}"
    elif n == 1 or m == 1:
        conclusion = ("**Not testable**: with a single run on one side no test can reach "
                      "significance")
    else:
        conclusion = f"**No difference detected** from {ref_short} at this n"
    if margin > 0:
        conclusion += "; " + (_equivalence(found, keys, margin) if n > 1 and m > 1 else
                              f"equivalence within ±{margin:g} cannot be shown with a "
                              "single run on one side")
    return f"*{label}* ({_runs(n)}): {'; '.join(parts)}. {conclusion}."


def _equivalence(found: dict, keys: Keys, margin: float) -> str:
    """Whether the score's shift lies within +-margin (two one-sided tests at 5%)."""
    ranked, ref_ranked = found["score"]["ranked"]
    missing = sum(not math.isfinite(v) for v in list(ranked) + list(ref_ranked))
    if missing:  # a diverged run is no evidence of sameness
        return (f"equivalence within ±{margin:g} cannot be shown: {_runs(missing)} "
                "diverged or have no value")
    equivalent = st.equivalent(ranked, ref_ranked, margin)
    if equivalent is None:
        return f"equivalence within ±{margin:g} cannot be shown at this n (no 90% interval)"
    interval = st.shift(ranked, ref_ranked, confidence=1 - 2 * st.ALPHA)
    text = _signed(interval, 2, stated=1 - 2 * st.ALPHA)
    if equivalent:
        return (f"**equivalent** in {keys.label} within ±{margin:g} (the 90% interval of "
                f"the shift, {text}, lies inside the margin)")
    return f"equivalence within ±{margin:g} not shown (90% interval of the shift {text})"


def _power_sentence(others, findings, loss_groups, reference, tests: int,
                    keys: Keys) -> str:
    """What the tests of a paragraph can detect at its n, and the runs for 80% power.

    Claims use Benjamini-Hochberg over the paragraph's ``tests``: the k smallest p pass
    when the k-th is at most k x alpha / tests. So a difference found on its own must
    reach alpha / tests (the bar used here, and for the power), and one found together
    with all the others only alpha; both are said, so that no sentence contradicts a
    claim the paragraph makes."""
    alone, together = st.ALPHA / tests, st.ALPHA
    sizes = {len(runs) for runs in loss_groups.values()}
    bars = (f"{st.ALPHA} / {tests} = {alone:.2g} for a difference found on its own, "
            f"{together:g} when all {tests} tests in this paragraph are significant "
            "together (Benjamini–Hochberg)")
    if max(sizes) < 2:
        return (f"A test needs at least {_min_runs(alone)} runs per loss here to be "
                f"significant on its own ({_min_runs(together)} if all {tests} tests in "
                "this paragraph were significant together); with one run per loss the "
                "values above are single runs, not a comparison.")
    n_ref = len(loss_groups[reference])
    sentences = []
    for n_other in sorted({len(loss_groups[label]) for label in others}, reverse=True):
        smallest = st.smallest_p(n_other, n_ref)
        at = f"At {n_other} against {n_ref} runs, p must be below {bars}"
        if smallest >= together:
            sentences.append(
                f"{at}: no outcome can be significant (the smallest possible p is "
                f"{smallest:.2g}); a test needs at least {_min_runs(alone)} runs per loss "
                f"({_min_runs(together)} if all tests are significant together).")
            continue
        needs = []
        for bar, when in ((alone, "On its own"), (together, "together")):
            detectable = st.detectable(n_other, n_ref, bar)
            if detectable is None:
                needs.append(f"{when} no outcome reaches that (the smallest possible p is "
                             f"{smallest:.2g})")
            elif detectable >= 1.0:
                needs.append(f"{when} it takes complete separation (P(better) = 0 or 1)")
            else:
                needs.append(f"{when} it takes P(better) ≥ {detectable:.2f} or ≤ "
                             f"{1 - detectable:.2f}")
        sentences.append(f"{at}. {'; '.join(needs)}.")
    estimates, labels = [], list(loss_groups)
    for label, found in zip(others, findings):
        ranked, ref_ranked = found["score"]["ranked"]
        if len(ranked) < 3 or len(ref_ranked) < 3:
            continue
        short = analysis.short_label(label, labels)
        if found["score"]["better"].value == 0.5:  # neither side tends to win: no effect
            estimates.append(f"{short}: none (no difference seen to detect)")
            continue
        runs = st.runs_for_power(ranked, ref_ranked, alone)
        estimates.append(f"{short}: about {runs}" if runs else
                         f"{short}: more than {st.POWER_MAX_RUNS}")
    if estimates:
        sentences.append(
            f"Runs per loss for {st.POWER:.0%} power, if the true {keys.label} difference "
            f"were the one seen (simulated by resampling these runs, at p < "
            f"{alone:.2g}, the bar of a difference found on its own; with so few runs "
            "that difference is itself uncertain): "
            f"{'; '.join(estimates)}.")
    return " ".join(sentences)


# --- provenance -------------------------------------------------------------------------------

def _code(attempt: dict) -> str:
    """The tool's version of an attempt: 'tfgan_exp 0.1.0 (abc1234567)'."""
    code = attempt.get("code", {})
    version = code.get("version", "?")
    if code.get("git_commit"):
        dirty = ", uncommitted changes" if code.get("git_dirty") else ""
        version += f" ({code['git_commit'][:10]}{dirty})"
    return f"tfgan_exp {version}"


def _environment(attempt: dict) -> str:
    """The software and machine of an attempt: 'TensorFlow 2.21.0, AMD EPYC, CPU'."""
    cuda = f" (built for CUDA {attempt['cuda']})" if attempt.get("cuda") else ""
    return (f"TensorFlow {attempt.get('tensorflow', '?')}{cuda}, {attempt.get('cpu', '?')}, "
            f"{' + '.join(attempt.get('devices', ['?']))}")


UNRECORDED = "not recorded (made before provenance was kept)"


def _run_made_with(run: Run) -> List[str]:
    return sorted({f"{_code(a)}, {_environment(a)}" for a in run.attempts}) or [UNRECORDED]


def _provenance_warning(runs: Sequence[Run]) -> str:
    attempts = [a for run in runs for a in run.attempts]
    environments = {_environment(a) for a in attempts}
    codes = {_code(a) for a in attempts}
    notes = []
    if len(environments) > 1:
        notes.append(f"these runs were made with {len(environments)} different software or "
                     "machines (see \"Made with\"): the same seeds take other paths on "
                     "each, so their runs are comparable only as samples")
    if len(codes) > 1:
        notes.append(f"they were made (or resumed) by {len(codes)} versions of this tool: "
                     "comparable as long as those versions train and measure alike")
    if any(not run.attempts for run in runs):
        notes.append("some do not record what made them (an older version wrote them)")
    return ("Note: " + "; ".join(notes) + ".") if notes else ""


def provenance_section(runs: Sequence[Run]) -> List[str]:
    counts = collections.Counter(line for run in runs for line in _run_made_with(run))
    rows = [{"made with": line, "runs": str(count)} for line, count in counts.most_common()]
    return ["## Made with", "", "Code, software and machine of every attempt at training "
            "these runs (a resumed run may count under several)."
            + (" **They differ.**" if len(rows) > 1 else ""), ""] + _table(rows)


# --- tables -----------------------------------------------------------------------------------

def _table(rows: List[dict]) -> List[str]:
    if not rows:
        return []
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(str(row.get(c, "–")) for c in columns) + " |"
               for row in rows] + [""])


def _metric_columns(keys: Keys):
    """(column title, record key, decimals, scale) of the tables' metrics."""
    columns = [(f"final {keys.label}", keys.score, 3, 1.0),
               ("10 splits (mean)", keys.score_mean_10, 3, 1.0),
               ("final FID", keys.fid, 1, 1.0),
               (f"final {_kid_title(keys)}", keys.kid, 2, _kid_scale(keys)),
               ("precision", keys.precision, 3, 1.0), ("recall", keys.recall, 3, 1.0)]
    if keys.classes:
        columns += [("digits covered", keys.classes, 1, 1.0),  # printed whole (_whole)
                    ("class KL", keys.class_kl, 2, 1.0)]
    return columns


def group_rows(groups: Dict[str, List[Run]], keys: Optional[Keys],
               anchor: Optional[dict]) -> List[dict]:
    """One summary row per group, and the anchor's row first."""
    rows = []
    if keys and anchor:
        row = {"group": "*real against real (anchor)*", "n": "–", "failed": "–",
               "diverged": "–", "interval": "–"}
        for title, key, decimals, scale in _metric_columns(keys):
            text = _value(anchor.get(key), decimals, scale)
            row[title] = _whole(text) if key == keys.classes else text
        rows.append(row)
    for name, runs in groups.items():
        measured = [r for r in runs if not r.divergence]
        level = st.median_interval(range(len(measured))).confidence  # this row's intervals
        row = {"group": name, "n": str(len(runs)),
               "failed": str(sum(bool(analysis.failure(r, keys)) for r in runs)),
               "diverged": str(len(runs) - len(measured)),
               "interval": st.percent(level) if level == level else "–"}
        if keys:
            for title, key, decimals, scale in _metric_columns(keys):
                text = st.median_interval(
                    [analysis.final(r, key) for r in measured]).text(decimals, scale, level)
                row[title] = _whole(text) if key == keys.classes else text
            row[f"best {keys.label}†"] = st.median_interval(
                [analysis.best(r, keys.score, True) for r in measured]).text(3, 1.0, level)
        minutes = [sum(r.get("seconds", 0) + r.get("eval_seconds", 0) for r in run.metrics)
                   / 60 for run in runs]
        row["minutes"] = st.median_interval(minutes).text(1, 1.0, level)
        rows.append(row)
    return rows


def run_rows(groups: Dict[str, List[Run]], keys: Keys, root: str) -> List[dict]:
    """Every run's own final values, as papers print them."""
    rows = []
    for runs in groups.values():
        for run in runs:
            row = {"run": os.path.relpath(run.dir, root), "seed": str(run.config["seed"]),
                   "epochs": str(run.last_epoch)}
            mean, std = analysis.final(run, keys.score_mean_10), analysis.final(run, keys.score_std)
            kid, kid_std = analysis.final(run, keys.kid), analysis.final(run, keys.kid_std)
            scale = _kid_scale(keys)
            row.update({
                keys.label: _value(analysis.final(run, keys.score), 3),
                "10 splits, mean ± std": (f"{mean:.3f} ± {std:.3f}" if mean is not None
                                          and std is not None else "–"),
                "FID": _value(analysis.final(run, keys.fid), 1),
                f"{_kid_title(keys)} ± SE": (f"{kid * scale:.2f} ± {kid_std * scale:.2f}"
                                             if kid is not None and kid_std is not None
                                             else "–"),
                "precision": _value(analysis.final(run, keys.precision), 3),
                "recall": _value(analysis.final(run, keys.recall), 3)})
            if keys.classes:
                row["digits covered"] = _value(analysis.final(run, keys.classes), 0)
                row["class KL"] = _value(analysis.final(run, keys.class_kl), 2)
            row["failure"] = analysis.failure(run, keys) or "–"
            rows.append(row)
    return rows


def _anchor(runs: Sequence[Run]) -> Optional[dict]:
    """The reference.json most of ``runs`` share (None if none has one)."""
    described = {json.dumps(r.reference, sort_keys=True): r.reference
                 for r in runs if r.reference}
    if not described:
        return None
    counts = collections.Counter(json.dumps(r.reference, sort_keys=True)
                                 for r in runs if r.reference)
    return described[counts.most_common(1)[0][0]]


def _sizes_sentence(reference: dict) -> str:
    return (f"Sizes: the score is over {reference['num_generated']:,} generated images; FID, "
            f"KID, precision and recall compare the first {reference['num_compared']:,} of "
            f"them with {reference['num_reference']:,} real images (those metrics depend on "
            f"the sizes); the anchor row compares {reference['num_reference']:,} other, "
            "held-out, real images with the same ones: what a perfect generator would get "
            "at this size (its score is over those images, and a score over fewer images "
            "reads a little lower).")


# --- sections ---------------------------------------------------------------------------------

def study_section(title: str, prefix: str, groups: Dict[str, List[Run]], root: str,
                  out_dir: str, reference_loss: str, margin: float) -> List[str]:
    """The verdict, tables and figures of one set of groups."""
    members = [run for group in groups.values() for run in group]
    keys = Keys.for_runs(members)
    lines = [f"## {title}", ""]
    if keys:
        sets = analysis.comparison_sets(groups)
        paragraphs = verdict(sets, keys, reference_loss, margin)
        compared = {id(runs) for _, members in sets for runs in members.values()}
        alone = [name for name, runs in groups.items() if id(runs) not in compared]
        if alone:
            paragraphs.append(
                f"Not compared: {', '.join(alone)} (no group of another loss shares "
                f"{'its' if len(alone) == 1 else 'their'} other settings; the tables give "
                f"{'its' if len(alone) == 1 else 'their'} values).")
        if paragraphs:
            lines += ["### Verdict", ""] + [p + "\n" for p in paragraphs]
    reference = _anchor(members)
    lines += ["### Groups", ""] + _table(group_rows(groups, keys, (reference or {}).get(
        "anchor")))
    if keys:
        lines += [f"Each cell: the median over the group's runs that did not diverge, with "
                  "its interval, of the confidence in the row's *interval* column. "
                  f"†: the best {keys.label} of each run's evaluations, a maximum over noisy "
                  "values (biased upwards), not used in the verdict.", ""]
    if reference:
        lines += [_sizes_sentence(reference), ""]
    failed = [{"run": os.path.relpath(r.dir, root), "failure": analysis.failure(r, keys)}
              for r in members if analysis.failure(r, keys)]
    if failed:
        lines += ["### Failed runs", ""] + _table(failed)
    if keys:
        lines += ["<details><summary>Every run's final values</summary>", ""]
        lines += _table(run_rows(groups, keys, root)) + ["</details>", ""]
    names = figures.curves(prefix, title, groups, keys, out_dir)
    if keys:
        names.insert(0, figures.final_values(prefix, title, groups, keys, out_dir))
    names.append(figures.samples(prefix, title, groups, out_dir))
    for name in names:
        lines += [f"![{name}]({name})", ""]
    return lines


def search_section(comparison: analysis.SearchComparison, root: str, reference_loss: str,
                   out_dir: str, number: int) -> List[str]:
    """A search's settings, the losses compared setting by setting, and the budget curves."""
    runs = comparison.runs
    keys = Keys.for_runs(runs)
    where = [comparison.context] if comparison.context else []
    if comparison.folder:
        where.append(os.path.relpath(comparison.folder, root))
    title = f"{comparison.dataset}: random search" + (f" ({', '.join(where)})"
                                                      if where else "")
    lines = [f"## {title}", ""]
    settings = comparison.settings
    epochs = sorted({r.config["epochs"] for r in runs})
    seeds = sorted({r.config["seed"] for r in runs})
    losses = len(comparison.trials)
    lines += [f"{len(settings)} distinct setting{'s' * (len(settings) != 1)} in all (drawn "
              f"from: {search_lib.describe_space()}), tried by {losses} "
              f"loss{'es' * (losses != 1)}: {_runs(len(runs))}, each of "
              f"{'/'.join(map(str, epochs))} epochs, with "
              f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}.", ""]
    if keys is None:
        return lines + ["No evaluations were recorded.", ""]
    # Every loss is judged on the settings all of them met, or the design is not paired
    # (a best of 6 against a best of 3, curves over different draws).
    common = set(comparison.common_settings)
    left_out = len(settings) - len(common)
    if left_out:
        lines += [f"{left_out} of the {len(settings)} settings "
                  f"{'was' if left_out == 1 else 'were'} not tried by every loss "
                  "(a trial still unfinished, or another search over other losses in this "
                  f"folder): left out of everything below, which compares the losses on "
                  f"the {len(common)} setting{'s' * (len(common) != 1)} they all met.", ""]
    if not common:
        return lines + ["No setting was tried by every loss: nothing to compare.", ""]
    scores, fids = ({loss: {s: v for s, v in by_setting.items() if s in common}
                     for loss, by_setting in comparison.values(key, keys, higher).items()}
                    for key, higher in ((keys.score, True), (keys.fid, False)))
    reference = analysis.reference_label(list(scores), reference_loss)
    stands_in = analysis.reference_note(list(scores), reference_loss)
    rows, tests = [], []
    for loss, by_setting in scores.items():
        best_setting = analysis.best_setting(by_setting)
        failed = sum(not math.isfinite(v) for v in by_setting.values())
        described = ", ".join(f"{k}={format_value(v)}" for k, v in zip(
            search_lib.SEARCHED_FIELDS, best_setting) if k != "lr_d")
        row = {"loss": loss, "settings": str(len(by_setting)), "failed settings": str(failed),
               f"best final {keys.label}": f"{_failed_or(by_setting[best_setting], 3)} "
                                           f"({described})",
               "best final FID": _failed_or(min(fids[loss].values()), 1),
               f"median final {keys.label}": _failed_or(
                   float(np.median(list(by_setting.values()))), 3)}
        if loss != reference:
            shared = [s for s in by_setting if s in scores[reference]]
            if shared:
                result = st.paired_test([by_setting[s] for s in shared],
                                        [scores[reference][s] for s in shared], True)
                tests.append((loss, result, len(shared)))
        rows.append(row)
    lines += _table(rows)
    if tests:
        adjusted = st.adjusted([result.p for _, result, _ in tests])
        short = analysis.short_label(reference, list(scores))
        lines += [f"Setting by setting against {short}"
                  + (f" ({stands_in})" if stands_in else "")
                  + " (each loss met the same settings: "
                  f"a paired design; Wilcoxon's signed-rank test, null from sign "
                  "permutations, Benjamini–Hochberg over this search's tests; a failed "
                  f"setting counts as the worst {keys.label}):", ""]
        for (loss, result, shared), p_adj in zip(tests, adjusted):
            outcome = ("**better**" if result.better > result.worse else "**worse**") \
                if p_adj < st.ALPHA else "no difference detected"
            untied = result.better + result.worse
            if p_adj >= st.ALPHA and 2.0 / 2 ** untied >= st.ALPHA:
                outcome += (f" (with {untied} untied setting{'s' * (untied != 1)} no "
                            f"outcome can reach p < {st.ALPHA}: that needs at least 6)")
            lines.append(f"- *{loss}*: higher {keys.label} in {result.better} of {shared} "
                         f"settings, lower in {result.worse}, tied in {result.ties}; p = "
                         f"{result.p:.3g} (adjusted {p_adj:.3g}): {outcome}.")
        lines.append("")
    lines += _budget_lines(comparison, keys, scores, fids, out_dir, number)
    return lines


def _budget_lines(comparison, keys: Keys, scores, fids, out_dir: str, number: int) -> List[str]:
    panels, worst_values = [], {}
    for label, key, higher, values in ((keys.label, keys.score, True, scores),
                                       ("FID", keys.fid, False, fids)):
        worst = comparison.worst(key, higher)
        if worst is None:
            continue
        worst_values[label] = worst
        panels.append((label, higher, {loss: st.budget_curve(list(by_setting.values()),
                                                             higher, worst)
                                       for loss, by_setting in values.items()}))
    if not panels:
        return ["Every trial failed before its first evaluation: no budget curves.", ""]
    prefix = comparison.dataset + (f"_{number}" if number else "")
    name = figures.budget(prefix, comparison.dataset, panels, out_dir)
    failed = "; ".join(
        f"{analysis.short_label(loss, list(scores))} "
        f"{sum(not math.isfinite(v) for v in by_setting.values())} of {len(by_setting)}"
        for loss, by_setting in scores.items())
    worst = ", ".join(f"{label} {value:.3g}" for label, value in worst_values.items())
    return [f"![{name}]({name})", "",
            "The curve is the best final value among k settings drawn from those tried; "
            "the band is its 2.5–97.5th percentile over 1,000 random orders of the "
            "settings (Lucic et al. 2018, figure 4). A setting that failed (diverged, did "
            f"not learn or collapsed) counts as the worst value any setting reached "
            f"({worst}). Failed settings: {failed}.", ""]


def _tuned_groups(runs: List[Run]) -> Dict[str, Dict[str, List[Run]]]:
    """A tuned re-run's groups: by loss, its tuned setting part of the loss, unless a
    loss has runs at several settings (then the settings name the groups)."""
    grouped = analysis.group_runs(runs, ignore=analysis.TUNED_SETTINGS)
    one_setting = all(len({r.setting(search_lib.SEARCHED_FIELDS) for r in members}) == 1
                      for groups in grouped.values() for members in groups.values())
    return grouped if one_setting else analysis.group_runs(runs)


def _search_now(searches: Sequence[analysis.SearchComparison], run: Run
                ) -> Optional[Tuple[tuple, set]]:
    """(the best setting, the seeds) that the search in this report which a tuned run
    follows (same ``tuned_key``) gives its loss now; None when no search here does."""
    key = search_lib.tuned_key(run.config)
    for comparison in searches:
        keys = Keys.for_runs(comparison.runs)
        for loss, by_setting in comparison.trials.items():
            members = [r for runs in by_setting.values() for r in runs]
            if keys is None or search_lib.tuned_key(members[0].config) != key:
                continue
            best = analysis.best_setting(comparison.values(keys.score, keys, True)[loss])
            return best, {r.config["seed"] for r in members}
    return None


def tuned_section(title: str, prefix: str, groups: Dict[str, List[Run]], root: str,
                  out_dir: str, reference_loss: str, margin: float,
                  searches: Sequence[analysis.SearchComparison] = ()) -> List[str]:
    """A tuned re-run: each loss at its best search setting, with fresh seeds. Where
    the search it follows is in this report too, both are checked against it: a search
    extended after the re-run may have another best setting, or share its seeds."""
    settings, changed, reused = [], [], set()
    for name, runs in groups.items():
        config = runs[0].config
        settings.append({"group": name, "its best search setting": ", ".join(
            f"{k}={format_value(config[k])}" for k in search_lib.SEARCHED_FIELDS)})
        now = _search_now(searches, runs[0])
        if now is None:
            continue
        best, search_seeds = now
        if best != runs[0].setting(search_lib.SEARCHED_FIELDS):
            changed.append(f"{name}: " + ", ".join(
                f"{k}={format_value(v)}" for k, v in zip(search_lib.SEARCHED_FIELDS, best)))
        reused |= {r.config["seed"] for r in runs} & search_seeds
    seeds = sorted({r.config["seed"] for runs in groups.values() for r in runs})
    fresh = ("the search did not use" if not reused else
             f"of which the search used {', '.join(map(str, sorted(reused)))} too")
    intro = [f"Each loss re-run at the setting that scored best in the search, with seeds "
             f"{fresh} ({', '.join(map(str, seeds))}): the search's best "
             "values are maxima over settings and overstate them (the winner's curse); "
             "these do not (Lucic et al. 2018's protocol).", ""] + _table(settings)
    if changed:
        intro += [f"**The search has changed since this re-run**: its best setting is now "
                  f"{'; '.join(changed)}. Run the tuned re-run again to follow it.", ""]
    lines = study_section(title, prefix, groups, root, out_dir, reference_loss, margin)
    return lines[:2] + intro + lines[2:]


# --- the document ---------------------------------------------------------------------------

def write_report(root: str, reference_loss: str = analysis.REFERENCE_LOSS,
                 equivalence_margin: float = 0.0) -> str:
    """Writes ``root/report/``; returns the path of report.md."""
    if equivalence_margin < 0 or not math.isfinite(equivalence_margin):
        raise UsageError(f"--equivalence_margin={equivalence_margin}: must be a finite "
                         "number >= 0 (in the score's units; 0 = no equivalence claims)")
    if reference_loss not in G_LOSS_NAMES:
        raise UsageError(f"--reference_loss={reference_loss}: not a generator loss; one of "
                         f"{', '.join(G_LOSS_NAMES)}")
    runs = analysis.find_runs(root)
    if not runs:
        raise UsageError(f"{root}: no run directories with metrics under it "
                         "(each run has config.json and metrics.jsonl)")
    out_dir = os.path.join(root, "report")
    os.makedirs(out_dir, exist_ok=True)
    unfinished = [run for run in runs if not run.finished]
    runs = [run for run in runs if run.finished]
    searched = [run for run in runs if run.search_root]
    tuned = [run for run in runs if run.tuned_root and not run.search_root]
    plain = [run for run in runs if not run.search_root and not run.tuned_root]
    # A run in two analyses (a search trial that is also a plain group's seed) is one run.
    lines = [f"# Does the GAN loss matter? Report for `{root}`", "",
             f"{_runs(len({run.identity for run in runs}))} finished ({len(searched)} of "
             f"them in a random search, {len(tuned)} in a tuned re-run)"
             + (f"; {len(unfinished)} unfinished, left out of every number below"
                if unfinished else "") + ".", "", HOW_TO_READ, ""]
    if unfinished:
        lines += ["## Unfinished runs", "",
                  "Stopped or still training; run the same command again to finish them.",
                  ""] + _table([{"run": os.path.relpath(run.dir, root),
                                 "epochs done": f"{run.last_epoch} of {run.config['epochs']}"}
                                for run in unfinished])
    duplicated = [run for run in runs + unfinished if run.duplicates]
    if duplicated:
        lines += ["## Runs found in more than one folder", "",
                  "The same settings and seed: counted once, as the folder that trained "
                  "furthest.", ""] + _table([
                      {"counted": os.path.relpath(run.dir, root),
                       "also in": ", ".join(os.path.relpath(d, root) for d in run.duplicates)}
                      for run in duplicated])
    for dataset, groups in analysis.group_runs(plain).items():
        lines += study_section(dataset, dataset, groups, root, out_dir, reference_loss,
                               equivalence_margin)
    searches = analysis.search_comparisons(searched)
    for number, comparison in enumerate(searches):
        lines += search_section(comparison, root, reference_loss, out_dir, number)
    tuned_roots = sorted({run.tuned_root for run in tuned})
    for number, tuned_root in enumerate(tuned_roots):
        members = [run for run in tuned if run.tuned_root == tuned_root]
        for dataset, groups in _tuned_groups(members).items():
            where = f" ({os.path.relpath(tuned_root, root)})" if len(tuned_roots) > 1 else ""
            lines += tuned_section(f"{dataset}: tuned re-run{where}",
                                   f"{dataset}_tuned{number or ''}", groups, root, out_dir,
                                   reference_loss, equivalence_margin, searches)
    lines += provenance_section(runs)
    path = os.path.join(out_dir, "report.md")
    write_atomically(path, "\n".join(lines))  # a reader never sees half a report
    return path


def main(argv):
    if len(argv) != 2:
        fail("give exactly one DIR holding run directories")
    if not os.path.isdir(argv[1]):
        fail(f"{argv[1]}: not a directory")
    try:
        print(write_report(argv[1], F.reference_loss, F.equivalence_margin))
    except UsageError as error:
        fail(str(error))


if __name__ == "__main__":
    run_command(main)
