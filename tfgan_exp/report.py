"""The comparison report: ``python -m tfgan_exp.report DIR`` -> DIR/report/.

Reads every run directory under DIR (any folder holding config.json and metrics.jsonl)
and writes ``report.md`` (a table per dataset: one row per loss pair, mean ± std over
seeds) and PNG figures per dataset: score and FID against epoch (mean line, min–max band
over seeds), D and G losses, the generator's gradient norm on a log scale, mean D(G(z)),
and the last sample grids side by side. A loss has the same colour in every figure.
"""
import collections
import os
import sys
from typing import Dict, List

import numpy as np
from absl import app

import tfgan_exp  # noqa: F401
from tfgan_exp.config import G_LOSS_NAMES, UsageError
from tfgan_exp.rundir import RunDir

COLOURS = dict(zip(G_LOSS_NAMES, ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]))


def find_runs(root: str) -> List[dict]:
    """Every run under ``root``: {'dir', 'config', 'metrics'}; runs without epochs skipped."""
    runs = []
    for folder, _, files in sorted(os.walk(root)):
        if "config.json" in files and "metrics.jsonl" in files:
            run_dir = RunDir(folder)
            metrics = run_dir.read_metrics()
            if metrics:
                runs.append({"dir": folder, "config": run_dir.saved_config(),
                             "metrics": metrics})
    return runs


def score_keys(metrics: List[dict]):
    """(score key, FID key, label) for Inception or digits metrics, or Nones."""
    keys = set().union(*metrics)
    if "inception_score" in keys:
        return "inception_score", "fid", "Inception Score"
    if "digits_score" in keys:
        return "digits_score", "digits_fid", "digits classifier score"
    return None, None, None


def loss_label(config: dict) -> str:
    return f"{config['g_loss']} / {config['d_loss']}"


def _series(runs, key):
    """Epochs and an array [seeds, epochs] of ``key`` (NaN where a run lacks it)."""
    epochs = sorted({r["epoch"] for run in runs for r in run["metrics"] if key in r})
    table = np.full((len(runs), len(epochs)), np.nan)
    index = {e: i for i, e in enumerate(epochs)}
    for row, run in enumerate(runs):
        for record in run["metrics"]:
            if key in record:
                table[row, index[record["epoch"]]] = record[key]
    return np.array(epochs), table


def _mean_std(values, decimals: int = 3) -> str:
    """'mean ± std' over seeds (just the value for one seed, '–' for none)."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if not len(values):
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{decimals}f}"
    return f"{values.mean():.{decimals}f} ± {values.std():.{decimals}f}"


def _final(run: dict, key: str):
    """The last value of ``key`` the run recorded (None if it never did)."""
    return next((r[key] for r in reversed(run["metrics"]) if key in r), None)


def _best(run: dict, key: str, best=max):
    """The run's best value of ``key`` (``max`` for scores, ``min`` for FID), or None."""
    return best((r[key] for r in run["metrics"] if key in r), default=None)


def table_rows(groups: Dict[str, List[dict]]) -> List[dict]:
    """One summary row per loss pair (see the report's column names)."""
    rows = []
    for label, runs in groups.items():
        score, fid, _ = score_keys([r for run in runs for r in run["metrics"]])
        row = {"loss": label, "seeds": len(runs),
               "epochs": _mean_std([run["metrics"][-1]["epoch"] for run in runs], 0)}
        if score:
            best_epochs = [max((r for r in run["metrics"] if score in r),
                               key=lambda r: r[score])["epoch"] for run in runs]
            row.update({"final score": _mean_std([_final(run, score) for run in runs]),
                        "best score": _mean_std([_best(run, score, max) for run in runs]),
                        "epoch of best": _mean_std(best_epochs, 1),
                        "final FID": _mean_std([_final(run, fid) for run in runs]),
                        "best FID": _mean_std([_best(run, fid, min) for run in runs])})
        minutes = [sum(r.get("seconds", 0) + r.get("eval_seconds", 0) for r in run["metrics"])
                   / 60 for run in runs]
        row["minutes"] = _mean_std(minutes, 1)
        rows.append(row)
    return rows


def _plot_curves(ax, groups, key, log=False):
    for label, runs in groups.items():
        epochs, values = _series(runs, key)
        if not len(epochs):
            continue
        colour = COLOURS.get(runs[0]["config"]["g_loss"], None)
        with np.errstate(all="ignore"):
            mean = np.nanmean(values, axis=0)
        ax.plot(epochs, mean, color=colour, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0),
                            color=colour, alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig, out_dir: str, name: str, plt) -> str:
    """Lays out, writes and closes ``fig`` as ``out_dir/name``; returns ``name``."""
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


def draw_figures(dataset: str, groups, out_dir: str) -> List[str]:
    """Writes the dataset's figures; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    metrics = [r for runs in groups.values() for run in runs for r in run["metrics"]]
    score, fid, score_label = score_keys(metrics)
    panels = []
    if score:
        panels += [(f"{dataset}_score.png", score, f"{score_label} (higher is better)", False),
                   (f"{dataset}_fid.png", fid, "Fréchet distance (lower is better)", False)]
    panels += [(f"{dataset}_g_grad_norm.png", "g_grad_norm",
                "generator gradient norm ‖∇θ L_G‖ (log)", True),
               (f"{dataset}_d_fake_prob.png", "d_fake_prob", "mean D(G(z)) = σ(logit)", False)]
    written = []
    for name, key, ylabel, log in panels:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        _plot_curves(ax, groups, key, log)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset}: {ylabel.split(' (')[0]}\n"
                     "per epoch; line: mean over seeds, band: min–max", fontsize=10)
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
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.6), squeeze=False)
    for ax, (label, runs) in zip(axes[0], groups.items()):
        run = runs[0]
        samples = os.path.join(run["dir"], "samples")
        files = sorted(f for f in os.listdir(samples) if f.endswith(".png"))
        if files:
            image = plt.imread(os.path.join(samples, files[-1]))
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(f"{label}\nseed {run['config']['seed']}, epoch {run['metrics'][-1]['epoch']}",
                     fontsize=9, color=COLOURS.get(run["config"]["g_loss"], "black"))
        ax.axis("off")
    fig.suptitle(f"{dataset}: last sample grids (fixed noise)")
    return _save(fig, out_dir, f"{dataset}_samples.png", plt)


def write_report(root: str) -> str:
    """Writes ``root/report/``; returns the path of report.md."""
    runs = find_runs(root)
    if not runs:
        raise UsageError(f"{root}: no run directories with metrics under it "
                         "(each run has config.json and metrics.jsonl)")
    out_dir = os.path.join(root, "report")
    os.makedirs(out_dir, exist_ok=True)
    by_dataset = collections.defaultdict(lambda: collections.defaultdict(list))
    order = {name: i for i, name in enumerate(G_LOSS_NAMES)}
    for run in sorted(runs, key=lambda r: (order.get(r["config"]["g_loss"], 99),
                                           r["config"]["seed"])):
        by_dataset[run["config"]["dataset"]][loss_label(run["config"])].append(run)
    lines = [f"# Does the GAN loss matter? Report for `{root}`", "",
             f"{len(runs)} runs. Scores are mean ± std over seeds (std over seeds, not over "
             "splits); 'final' is the last evaluated epoch, 'best' the best one per seed.", ""]
    for dataset, groups in by_dataset.items():
        rows = table_rows(groups)
        columns = list(rows[0])
        for row in rows[1:]:
            columns += [c for c in row if c not in columns]
        lines += [f"## {dataset}", "", "| " + " | ".join(columns) + " |",
                  "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(row.get(c, "–")) for c in columns) + " |"
                  for row in rows]
        lines.append("")
        for name in draw_figures(dataset, groups, out_dir):
            lines += [f"![{name}]({name})", ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv):
    if len(argv) != 2:
        print("error: give exactly one DIR holding run directories", file=sys.stderr)
        sys.exit(2)
    if not os.path.isdir(argv[1]):
        print(f"error: {argv[1]}: not a directory", file=sys.stderr)
        sys.exit(2)
    try:
        print(write_report(argv[1]))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
