"""The comparison report: ``python -m tfgan_exp.report DIR`` -> DIR/report/.

Reads every run under DIR (any folder holding config.json and metrics.jsonl or
diverged.json) and writes ``report.md`` and PNG figures, per dataset:

- a verdict: each loss against a reference loss (``--reference_loss``, default
  nonsat), from
  the numbers below it, saying "not distinguishable at n = ..." when it is not;
- a table of groups (runs with the same settings but for the seed; a group is named by
  the settings that differ across the runs): n, failures, and the mean with its 95%
  bootstrap interval of the final and best score, FID, KID, precision and recall;
- the failed runs, and where and why each failed (diverged, or collapsed: final recall
  below 0.1);
- for a random search (``--search``), the best score and FID found against the number
  of settings tried, with a 95% band over the trials' order (Lucic et al. 2018, fig. 4);
- figures: score, FID, recall and precision against epoch (mean line, min-max band over
  seeds, x where a run diverged), the losses, the generator's gradient norm, mean
  D(G(z)), and the last sample grids. A loss has the same colour in every figure.

The statistics are in ``analysis``; this module only writes.
"""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import flags

import tfgan_exp  # noqa: F401
from tfgan_exp import analysis
from tfgan_exp import search as search_lib
from tfgan_exp.analysis import Keys, Run
from tfgan_exp.command_line import fail, run_command
from tfgan_exp.config import G_LOSS_NAMES, UsageError
from tfgan_exp.grid import format_value

COLOURS = dict(zip(G_LOSS_NAMES, ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]))
LINESTYLES = ["-", "--", ":", "-."]

F = flags.FLAGS
flags.DEFINE_string("reference_loss", analysis.REFERENCE_LOSS, "Generator loss every other loss "
                    "is compared with in the verdict (when the runs have it).")


def _colour(run: Run) -> str:
    return COLOURS.get(run.config["g_loss"], "black")


# --- the verdict ------------------------------------------------------------------------

def verdict(sets, keys: Keys, reference_loss: str) -> List[str]:
    """One paragraph per set of groups that differ only in their loss
    (``analysis.comparison_sets``)."""
    paragraphs = []
    for shared, loss_groups in sets:
        labels = list(loss_groups)
        reference = next((label for label in labels if label.startswith(reference_loss + " ")),
                         labels[0])
        ref_runs = loss_groups[reference]
        config = ref_runs[0].config
        context = ", ".join([f"{config['dataset']}, {config['epochs']} epochs"]
                            + ([shared] if shared else []))
        lines, p_values, findings = [], [], []
        for label in labels:
            if label == reference:
                continue
            runs = loss_groups[label]
            found = _compare_groups(runs, ref_runs, keys)
            findings.append((label, runs, found))
            p_values += [found["score"].p, found["fid"].p, found["failures_p"]]
        adjusted = analysis.adjusted(p_values)
        for number, (label, runs, found) in enumerate(findings):
            p_adj = dict(zip(("score", "fid", "failures"), adjusted[3 * number:3 * number + 3]))
            lines.append(_verdict_sentence(label, runs, reference, ref_runs, found, p_adj,
                                           keys))
        n_text = _n_text(loss_groups)
        paragraphs.append(
            f"**{context}** ({n_text}; reference: {reference}). "
            + " ".join(lines))
    return paragraphs


def _n_text(loss_groups: Dict[str, List[Run]]) -> str:
    sizes = sorted({len(runs) for runs in loss_groups.values()})
    return "n = " + "–".join(str(n) for n in sizes) + " runs per loss"


def _compare_groups(runs: List[Run], ref_runs: List[Run], keys: Keys) -> dict:
    score = analysis.compare(
        analysis.ranked_values(runs, lambda r: analysis.final(r, keys.score), True),
        analysis.ranked_values(ref_runs, lambda r: analysis.final(r, keys.score), True),
        higher_is_better=True)
    fid = analysis.compare(
        analysis.ranked_values(runs, lambda r: analysis.final(r, keys.fid), False),
        analysis.ranked_values(ref_runs, lambda r: analysis.final(r, keys.fid), False),
        higher_is_better=False)
    failed = sum(bool(analysis.failure(r, keys)) for r in runs)
    ref_failed = sum(bool(analysis.failure(r, keys)) for r in ref_runs)
    return {"score": score, "fid": fid, "failed": failed, "ref_failed": ref_failed,
            "failures_p": analysis.failure_test(failed, len(runs), ref_failed, len(ref_runs))}


def _finished_interval(runs: Sequence[Run], key: str) -> analysis.Interval:
    return analysis.interval([analysis.final(r, key) for r in runs if not r.divergence])


def _verdict_sentence(label, runs, reference, ref_runs, found, p_adj, keys) -> str:
    short, ref_short = label.split(" /")[0], reference.split(" /")[0]
    claims = []
    for metric, key, name, decimals in (("score", keys.score, f"final {keys.label}", 2),
                                        ("fid", keys.fid, "final FID", 1)):
        comparison = found[metric]
        if p_adj[metric] < analysis.ALPHA:
            better = comparison.prob_a_better > 0.5
            direction = "better" if better else "worse"
            claims.append(
                f"its {name} is {direction} than {ref_short}'s "
                f"({_finished_interval(runs, key).text(decimals)} against "
                f"{_finished_interval(ref_runs, key).text(decimals)}; Mann–Whitney "
                f"p = {comparison.p:.3g}, adjusted {p_adj[metric]:.3g}; "
                f"P({short} better) = {comparison.prob_a_better:.2f})")
    failures = (f"it failed in {found['failed']} of {len(runs)} runs, {ref_short} in "
                f"{found['ref_failed']} of {len(ref_runs)}")
    if p_adj["failures"] < analysis.ALPHA:
        claims.append(f"{failures} (Fisher's exact p = {found['failures_p']:.3g}, adjusted "
                      f"{p_adj['failures']:.3g})")
    if claims:
        return f"*{label}*: " + "; ".join(claims) + "."
    score, fid = found["score"], found["fid"]
    n = f"{score.n_a} and {score.n_b}" if score.n_a != score.n_b else str(score.n_a)
    limit = (f"; at this n no outcome could give p below {score.smallest_p:.2g}"
             if score.smallest_p >= analysis.ALPHA else "")
    return (f"*{label}*: not distinguishable from {ref_short} at n = {n} (final "
            f"{keys.label} {_finished_interval(runs, keys.score).text(2)} against "
            f"{_finished_interval(ref_runs, keys.score).text(2)}, Mann–Whitney p = "
            f"{score.p:.3g}; final FID p = {fid.p:.3g}; {failures}{limit}).")


# --- tables -----------------------------------------------------------------------------

def group_rows(groups: Dict[str, List[Run]], keys: Optional[Keys]) -> List[dict]:
    """One summary row per group (see the report's column names)."""
    rows = []
    for name, runs in groups.items():
        finished = [r for r in runs if not r.divergence]
        row = {"group": name, "n": str(len(runs)),
               "failed": str(sum(bool(analysis.failure(r, keys)) for r in runs))}
        if keys:
            for key, title, higher, decimals in (
                    (keys.score, "score", True, 3), (keys.fid, "FID", False, 1),
                    (keys.kid, "KID", False, 4)):
                row[f"final {title}"] = analysis.interval(
                    [analysis.final(r, key) for r in finished]).text(decimals)
                if key != keys.kid:
                    row[f"best {title}"] = analysis.interval(
                        [analysis.best(r, key, higher) for r in finished]).text(decimals)
            for key, title in ((keys.precision, "final precision"),
                               (keys.recall, "final recall")):
                row[title] = analysis.interval(
                    [analysis.final(r, key) for r in finished]).text(3)
        minutes = [sum(r.get("seconds", 0) + r.get("eval_seconds", 0) for r in run.metrics)
                   / 60 for run in runs]
        row["minutes"] = analysis.interval(minutes).text(1)
        rows.append(row)
    return rows


def _table(rows: List[dict]) -> List[str]:
    if not rows:
        return []
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(str(row.get(c, "–")) for c in columns) + " |"
               for row in rows] + [""])


def failure_rows(runs: Sequence[Run], keys: Optional[Keys], root: str) -> List[dict]:
    return [{"run": os.path.relpath(run.dir, root), "failure": analysis.failure(run, keys)}
            for run in runs if analysis.failure(run, keys)]


# --- figures ----------------------------------------------------------------------------

def _series(runs, key):
    """Epochs and an array [runs, epochs] of ``key`` (NaN where a run lacks it)."""
    epochs = sorted({r["epoch"] for run in runs for r in run.metrics if key in r})
    table = np.full((len(runs), len(epochs)), np.nan)
    index = {e: i for i, e in enumerate(epochs)}
    for row, run in enumerate(runs):
        for record in run.metrics:
            if key in record:
                table[row, index[record["epoch"]]] = record[key]
    return np.array(epochs), table


def _styles(groups: Dict[str, List[Run]]) -> Dict[str, str]:
    """A line style per group: groups of one loss differ by it."""
    seen: Dict[str, int] = {}
    styles = {}
    for name, runs in groups.items():
        loss = runs[0].loss
        styles[name] = LINESTYLES[seen.get(loss, 0) % len(LINESTYLES)]
        seen[loss] = seen.get(loss, 0) + 1
    return styles


def _plot_curves(ax, groups, key, log=False):
    styles = _styles(groups)
    for name, runs in groups.items():
        epochs, values = _series(runs, key)
        if not len(epochs):
            continue
        colour = _colour(runs[0])
        with np.errstate(all="ignore"):
            mean = np.nanmean(values, axis=0)
        ax.plot(epochs, mean, color=colour, linestyle=styles[name],
                label=f"{name} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0),
                            color=colour, alpha=0.15, linewidth=0)
        for run in runs:  # where a run diverged: its last recorded value, marked x
            last = analysis.final(run, key)
            if run.divergence and last is not None and run.metrics:
                ax.plot([run.metrics[-1]["epoch"]], [last], "x", color=colour, markersize=8)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, out_dir: str, name: str, plt) -> str:
    """Lays out, writes and closes ``fig`` as ``out_dir/name``; returns ``name``."""
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw_figures(dataset: str, groups, keys: Optional[Keys], out_dir: str) -> List[str]:
    """Writes the dataset's figures; returns their file names."""
    plt = _pyplot()
    panels = []
    if keys:
        panels += [(f"{dataset}_score.png", keys.score, f"{keys.label} (higher is better)",
                    False),
                   (f"{dataset}_fid.png", keys.fid, "Fréchet distance (lower is better)",
                    False),
                   (f"{dataset}_recall.png", keys.recall,
                    "recall, k = 3 (coverage; low = mode collapse)", False),
                   (f"{dataset}_precision.png", keys.precision,
                    "precision, k = 3 (fidelity)", False)]
    panels += [(f"{dataset}_g_grad_norm.png", "g_grad_norm",
                "generator gradient norm ‖∇θ L_G‖ (log)", True),
               (f"{dataset}_d_fake_prob.png", "d_fake_prob", "mean D(G(z)) = σ(logit)", False)]
    written = []
    for name, key, ylabel, log in panels:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        _plot_curves(ax, groups, key, log)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset}: {ylabel.split(' (')[0]}\n"
                     "per epoch; line: mean over seeds, band: min–max, x: diverged",
                     fontsize=10)
        written.append(_save(fig, out_dir, name, plt))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in zip(axes, ("d_loss", "g_loss"), ("discriminator loss",
                                                           "generator loss")):
        _plot_curves(ax, groups, key)
        ax.set_ylabel(f"{title} (per-example mean)")
        ax.set_title(f"{dataset}: {title}")
    written.append(_save(fig, out_dir, f"{dataset}_losses.png", plt))
    written.append(_sample_figure(dataset, groups, out_dir, plt))
    return written


def _sample_figure(dataset, groups, out_dir, plt):
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.8), squeeze=False)
    for ax, (name, runs) in zip(axes[0], groups.items()):
        run = runs[0]
        samples = os.path.join(run.dir, "samples")
        files = sorted(f for f in os.listdir(samples) if f.endswith(".png")) if os.path.isdir(
            samples) else []
        if files:
            image = plt.imread(os.path.join(samples, files[-1]))
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        epoch = run.metrics[-1]["epoch"] if run.metrics else 0
        ax.set_title(f"{name}\nseed {run.config['seed']}, epoch {epoch}", fontsize=8,
                     color=_colour(run))
        ax.axis("off")
    fig.suptitle(f"{dataset}: last sample grids (fixed noise)")
    return _save(fig, out_dir, f"{dataset}_samples.png", plt)


# --- random search ----------------------------------------------------------------------

def search_section(dataset: str, runs: List[Run], keys: Keys, reference_loss: str,
                   out_dir: str) -> List[str]:
    """The budget curves and the best settings found, for the search runs of a dataset."""
    by_loss: Dict[str, Dict[int, List[Run]]] = {}
    for run in sorted(runs, key=lambda r: (r.loss, r.trial)):
        by_loss.setdefault(run.loss, {}).setdefault(run.trial, []).append(run)
    trial_values = {}
    for loss, trials in by_loss.items():
        values = {}
        for key, higher in ((keys.score, True), (keys.fid, False)):
            # A trial's value: the mean over its seeds; a diverged seed makes it worst.
            values[key] = [float(np.mean(analysis.ranked_values(
                members, lambda r, k=key: analysis.final(r, k), higher)))
                for members in trials.values()]
        trial_values[loss] = values
    lines = [f"### Random search ({sum(len(t) for t in by_loss.values())} settings in all)",
             ""]
    rows = []
    reference = next((loss for loss in by_loss if loss.startswith(reference_loss + " ")), None)
    for loss, trials in by_loss.items():
        scores = trial_values[loss][keys.score]
        fids = trial_values[loss][keys.fid]
        best = int(np.argmax(scores))
        best_run = list(trials.values())[best][0]
        setting = ", ".join(f"{k}={format_value(best_run.config[k])}"
                            for k in search_lib.SEARCHED_FIELDS if k != "lr_d")
        failed = sum(bool(analysis.failure(r, keys)) for members in trials.values()
                     for r in members)
        row = {"loss": loss, "settings": str(len(trials)), "failed runs": str(failed),
               f"best final {keys.label}": f"{scores[best]:.3f} ({setting})",
               "best final FID": f"{min(fids):.1f}",
               f"median final {keys.label}": f"{np.median(scores):.3f}"}
        if reference and loss != reference:
            comparison = analysis.compare(scores, trial_values[reference][keys.score], True)
            row[f"vs {reference.split(' /')[0]} over settings"] = (
                f"p = {comparison.p:.3g}, P(better) = {comparison.prob_a_better:.2f}")
        rows.append(row)
    lines += _table(rows)
    lines.append(_budget_figure(dataset, trial_values, keys, out_dir))
    lines.append("")
    lines.append("The curve is the best final value among k settings drawn from the "
                 "search's; the band is its 2.5–97.5th percentile over 1,000 random orders "
                 "of the settings tried (Lucic et al. 2018, figure 4). Each loss met the "
                 "same settings; a setting that diverged never counts as the best.")
    lines.append("")
    return lines


def _budget_figure(dataset, trial_values, keys: Keys, out_dir) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title, higher in ((axes[0], keys.score, keys.label, True),
                                   (axes[1], keys.fid, "FID", False)):
        for loss, values in trial_values.items():
            curve = analysis.budget_curve(values[key], higher)
            colour = COLOURS.get(loss.split(" /")[0], "black")
            ax.plot(curve.k, curve.mean, color=colour, label=loss, marker="o", markersize=3)
            ax.fill_between(curve.k, curve.low, curve.high, color=colour, alpha=0.15,
                            linewidth=0)
        ax.set_xlabel("settings tried")
        ax.set_xticks(curve.k)  # a count of settings: whole numbers only
        ax.set_ylabel(f"best final {title} so far")
        ax.set_title(f"{dataset}: best {title} found vs budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    name = _save(fig, out_dir, f"{dataset}_search_budget.png", plt)
    return f"![{name}]({name})"


# --- the document -----------------------------------------------------------------------

HOW_TO_READ = (
    "How to read it: a *group* is the runs that share every setting but the seed. "
    "Values are means over a group's runs that did not diverge, with a 95% bootstrap "
    "confidence interval in brackets (scipy, percentile method, 10,000 resamples; with "
    "few runs such intervals are optimistic). A run *failed* if it diverged or collapsed "
    f"(final recall below {analysis.COLLAPSE_RECALL}). The verdict compares each loss with "
    "the reference by a two-sided Mann–Whitney U test on the runs' final values (a "
    "diverged run ranks worst; the null distribution from permutations: all of them, so "
    "exact, up to 7 runs per side, else 9,999 random ones), and failure rates by "
    "Fisher's exact test; a difference is claimed when its Benjamini–Hochberg adjusted "
    "p-value is below 0.05, adjusted over the family of one paragraph (score, FID and "
    "failures of every loss against the reference). "
    "P(A better) is the probability that a run of A beats a run of the reference. "
    "Runs that did not finish all their epochs are left out of every number.")


def write_report(root: str, reference_loss: str = analysis.REFERENCE_LOSS) -> str:
    """Writes ``root/report/``; returns the path of report.md."""
    runs = analysis.find_runs(root)
    if not runs:
        raise UsageError(f"{root}: no run directories with metrics under it "
                         "(each run has config.json and metrics.jsonl)")
    out_dir = os.path.join(root, "report")
    os.makedirs(out_dir, exist_ok=True)
    unfinished = [run for run in runs if not run.finished]
    runs = [run for run in runs if run.finished]
    plain = [run for run in runs if run.trial is None]
    searched = [run for run in runs if run.trial is not None]
    lines = [f"# Does the GAN loss matter? Report for `{root}`", "",
             f"{len(runs)} runs finished ({len(searched)} of them in a random search)"
             + (f"; {len(unfinished)} unfinished, left out of every number below"
                if unfinished else "") + ".", "", HOW_TO_READ, ""]
    if unfinished:
        lines += ["## Unfinished runs", "",
                  "Stopped or still training; run the same command again to finish them.",
                  ""] + _table([{"run": os.path.relpath(run.dir, root),
                                 "epochs done": f"{run.last_epoch} of {run.config['epochs']}"}
                                for run in unfinished])
    for dataset, groups in analysis.group_runs(plain).items():
        members = [run for group in groups.values() for run in group]
        keys = Keys.for_runs(members)
        lines += [f"## {dataset}", ""]
        if keys:
            paragraphs = verdict(analysis.comparison_sets(groups), keys, reference_loss)
            if paragraphs:
                lines += ["### Verdict", ""] + [p + "\n" for p in paragraphs]
        lines += ["### Groups", ""] + _table(group_rows(groups, keys))
        failed = failure_rows(members, keys, root)
        if failed:
            lines += ["### Failed runs", ""] + _table(failed)
        for name in draw_figures(dataset, groups, keys, out_dir):
            lines += [f"![{name}]({name})", ""]
    by_dataset: Dict[str, List[Run]] = {}
    for run in searched:
        by_dataset.setdefault(run.config["dataset"], []).append(run)
    for dataset, members in by_dataset.items():
        keys = Keys.for_runs(members)
        if keys:
            lines += [f"## {dataset}: random search", ""]
            lines += search_section(dataset, members, keys, reference_loss, out_dir)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv):
    if len(argv) != 2:
        fail("give exactly one DIR holding run directories")
    if not os.path.isdir(argv[1]):
        fail(f"{argv[1]}: not a directory")
    try:
        print(write_report(argv[1], F.reference_loss))
    except UsageError as error:
        fail(str(error))


if __name__ == "__main__":
    run_command(main)
