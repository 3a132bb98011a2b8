"""The report's figures (PNG, matplotlib): curves per epoch, every run's final values,
sample grids, and a search's budget curves. A loss has the same colour in every figure.

Each function writes one file into ``out_dir`` and returns its name.
"""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfgan_exp.report import analysis
from tfgan_exp.report import statistics as st
from tfgan_exp.report.analysis import Keys, Run
from tfgan_exp.config import G_LOSS_NAMES

COLOURS = dict(zip(G_LOSS_NAMES, ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]))
LINESTYLES = ["-", "--", ":", "-."]


def colour(loss_label: str) -> str:
    """The colour of a loss ('minimax / bce' or 'minimax')."""
    return COLOURS.get(loss_label.split(" /")[0], "black")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_dir: str, name: str, plt) -> str:
    """Lays out, writes and closes ``fig`` as ``out_dir/name``; returns ``name``."""
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


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
        line_colour = colour(runs[0].loss)
        with np.errstate(all="ignore"):
            mean = np.nanmean(values, axis=0)
        ax.plot(epochs, mean, color=line_colour, linestyle=styles[name],
                label=f"{name} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0),
                            color=line_colour, alpha=0.15, linewidth=0)
        for run in runs:  # where a run diverged: its last recorded value, marked x
            last = analysis.final(run, key)
            if run.divergence and last is not None and run.metrics:
                ax.plot([run.metrics[-1]["epoch"]], [last], "x", color=line_colour,
                        markersize=8)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def curves(prefix: str, title: str, groups, keys: Optional[Keys], out_dir: str) -> List[str]:
    """Per-epoch curves of every metric and diagnostic; returns the file names."""
    plt = _pyplot()
    panels = []
    if keys:
        panels += [("score", keys.score, f"{keys.label} (higher is better)", False),
                   ("fid", keys.fid, "Fréchet distance (lower is better)", False),
                   ("recall", keys.recall, "recall, k = 3 (coverage; low = mode collapse)",
                    False),
                   ("precision", keys.precision, "precision, k = 3 (fidelity)", False)]
        if keys.classes:
            panels.append(("classes", keys.classes,
                           "digits covered, of 10 (low = mode collapse)", False))
    panels += [("g_grad_norm", "g_grad_norm", "generator gradient norm ‖∇θ L_G‖ (log)", True),
               ("d_fake_prob", "d_fake_prob", "mean D(G(z)) = σ(logit)", False)]
    written = []
    for name, key, ylabel, log in panels:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        _plot_curves(ax, groups, key, log)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {ylabel.split(' (')[0]}\n"
                     "per epoch; line: mean over seeds, band: min–max, x: diverged",
                     fontsize=10)
        written.append(_save(fig, out_dir, f"{prefix}_{name}.png", plt))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in zip(axes, ("d_loss", "g_loss"), ("discriminator loss",
                                                           "generator loss")):
        _plot_curves(ax, groups, key)
        ax.set_ylabel(f"{label} (per-example mean)")
        ax.set_title(f"{title}: {label}")
    written.append(_save(fig, out_dir, f"{prefix}_losses.png", plt))
    return written


def final_values(prefix: str, title: str, groups: Dict[str, List[Run]], keys: Keys,
                 out_dir: str) -> str:
    """Every run's final value as a point, per group and metric, beside the group's
    median and its interval (as Lucic et al. and Kurach et al. show results)."""
    plt = _pyplot()
    panels = [(keys.score, keys.label), (keys.fid, "FID"), (keys.recall, "recall"),
              (keys.precision, "precision")]
    if keys.classes:
        panels.append((keys.classes, "digits covered"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 4.6), squeeze=False)
    names = list(groups)
    rng = np.random.default_rng(0)  # the jitter only spreads points that overlap
    for ax, (key, label) in zip(axes[0], panels):
        for x, name in enumerate(names):
            runs = groups[name]
            values = [analysis.final(r, key) for r in runs if not r.divergence]
            values = [v for v in values if v is not None and np.isfinite(v)]
            point_colour = colour(runs[0].loss)
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(values)), values, s=18,
                       color=point_colour, alpha=0.8, zorder=3)
            estimate = st.median_interval(values)
            if estimate.has_interval:
                ax.errorbar([x + 0.28], [estimate.value],
                            yerr=[[estimate.value - estimate.low],
                                  [estimate.high - estimate.value]],
                            fmt="s", color="black", markersize=4, capsize=3, zorder=4)
            diverged = sum(bool(r.divergence) for r in runs)
            if diverged:
                ax.annotate(f"{diverged} diverged", (x, 0), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=7, color=point_colour)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace(", ", "\n") for n in names], fontsize=7, rotation=30,
                           ha="right")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{title}: final values, one point per run; black: median and its "
                 "interval", fontsize=10)
    return _save(fig, out_dir, f"{prefix}_final.png", plt)


def samples(prefix: str, title: str, groups: Dict[str, List[Run]], out_dir: str) -> str:
    """Each group's first run's last sample grid."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.8), squeeze=False)
    for ax, (name, runs) in zip(axes[0], groups.items()):
        run = runs[0]
        folder = os.path.join(run.dir, "samples")
        files = sorted(f for f in os.listdir(folder) if f.endswith(".png")) if os.path.isdir(
            folder) else []
        if files:
            image = plt.imread(os.path.join(folder, files[-1]))
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(f"{name}\nseed {run.config['seed']}, epoch {run.last_epoch}", fontsize=8,
                     color=colour(run.loss))
        ax.axis("off")
    fig.suptitle(f"{title}: last sample grids (fixed noise)")
    return _save(fig, out_dir, f"{prefix}_samples.png", plt)


def budget(prefix: str, title: str, curves_by_metric: Sequence, out_dir: str) -> str:
    """A search's budget curves: ``curves_by_metric`` is [(metric label, higher is
    better, {loss: statistics.BudgetCurve})]."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves_by_metric), figsize=(5.5 * len(curves_by_metric),
                                                                 4.2), squeeze=False)
    for ax, (label, higher, by_loss) in zip(axes[0], curves_by_metric):
        for loss, curve in by_loss.items():
            line_colour = colour(loss)
            ax.plot(curve.k, curve.mean, color=line_colour, label=loss, marker="o",
                    markersize=3)
            ax.fill_between(curve.k, curve.low, curve.high, color=line_colour, alpha=0.15,
                            linewidth=0)
            ax.set_xticks(curve.k)  # a count of settings: whole numbers only
        ax.set_xlabel("settings tried")
        ax.set_ylabel(f"best final {label} so far ({'higher' if higher else 'lower'} is "
                      "better)")
        ax.set_title(f"{title}: best {label} found vs budget", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_dir, f"{prefix}_search_budget.png", plt)
