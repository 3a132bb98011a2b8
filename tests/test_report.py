"""The report's statistics on known inputs, its groups, failures, verdict and figures.

The run folders here are written with the run directory's own writer (RunDir), with
made-up metrics: the report reads files, so it is tested on files, without training.
"""
import math
import os

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from conftest import run_command
from tfgan_exp import analysis, grid, report
from tfgan_exp.config import Config, UsageError
from tfgan_exp.rundir import RunDir


def write_run(root, name, scores, recall=0.6, diverged_at=None, epochs=None, **settings):
    """A run folder as training writes it: one record per epoch with digits metrics
    (``epochs`` asked for, default one per score: a run stopped early has fewer)."""
    config = Config(dataset="digits", epochs=epochs or len(scores),
                    run_dir=os.path.join(root, name),
                    **settings).resolved()
    run_dir = RunDir(config.run_dir)
    run_dir.prepare(config)
    for epoch, score in enumerate(scores, start=1):
        run_dir.append_metrics({
            "epoch": epoch, "step": 28 * epoch, "d_loss": 1.2, "g_loss": 0.8,
            "g_grad_norm": 1.0, "d_fake_prob": 0.3, "seconds": 2.0, "eval_seconds": 0.5,
            "digits_score": score, "digits_fid": 100.0 / score, "digits_kid": 0.1 / score,
            "digits_precision": 0.7, "digits_recall": recall})
    image = tf.io.encode_png(np.zeros((16, 16, 1), np.uint8)).numpy()
    with open(os.path.join(run_dir.samples_dir, f"epoch_{len(scores):04d}.png"), "wb") as f:
        f.write(image)
    if diverged_at:
        run_dir.record_divergence({"epoch": diverged_at, "step": 28 * diverged_at - 3,
                                   "values": {"d_loss": "nan"}, "checkpoint": "ckpt-x"})
    return config


# --- statistics on known inputs -------------------------------------------------------

def test_mann_whitney_and_effect_size_on_known_samples():
    low, high = [1.0, 2, 3, 4, 5], [6.0, 7, 8, 9, 10]
    result = analysis.compare(low, high, higher_is_better=True)
    # No overlap at n = 5 + 5: U = 0, exact two-sided p = 2 / C(10, 5) = 2/252.
    assert result.u == 0 and result.p == pytest.approx(2 / 252)
    assert result.prob_a_better == 0 and result.smallest_p == pytest.approx(2 / 252)
    assert result.p == pytest.approx(scipy.stats.mannwhitneyu(low, high).pvalue)
    # For FID lower is better: the same numbers make ``low`` the better one.
    assert analysis.compare(low, high, higher_is_better=False).prob_a_better == 1
    # A diverged run (-inf) ranks below every finished run.
    assert analysis.compare([-math.inf, 6, 7], [1, 2, 3], True).prob_a_better == pytest.approx(
        6 / 9)
    # n = 2 + 2: no outcome can reach p < 0.05.
    assert analysis.compare([1, 2], [3, 4], True).smallest_p == pytest.approx(1 / 3)


def test_mann_whitney_with_tied_diverged_runs_keeps_the_exact_p():
    # Three diverged runs tie at -inf; every run of a is still below every run of b, so
    # the exact p is that of no overlap, 2 / C(10, 5). scipy's default (a normal
    # approximation whenever there are ties) would say otherwise.
    a, b = [-math.inf, -math.inf, -math.inf, 1.0, 2.0], [3.0, 4, 5, 6, 7]
    assert analysis.compare(a, b, True).p == pytest.approx(2 / 252)
    assert scipy.stats.mannwhitneyu(a, b).pvalue != pytest.approx(2 / 252)


def test_bootstrap_interval_is_scipys_and_degenerate_cases_are_plain():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    result = analysis.interval(values)
    expected = scipy.stats.bootstrap((np.array(values),), np.mean, confidence_level=0.95,
                                     n_resamples=10_000, method="percentile",
                                     rng=np.random.default_rng(0)).confidence_interval
    assert (result.mean, result.low, result.high) == pytest.approx(
        (3.0, expected.low, expected.high))
    assert 1.0 < result.low < 3.0 < result.high < 5.0 and result.n == 5
    assert result.text(1) == f"3.0 [{expected.low:.1f}, {expected.high:.1f}]"
    assert analysis.interval([2.0, None, float("nan")]).text(2) == "2.00"  # one finite value
    assert analysis.interval([4.0, 4.0]).text(1) == "4.0 [4.0, 4.0]"
    assert analysis.interval([]).text() == "–"


def test_fisher_exact_and_benjamini_hochberg_are_scipys():
    assert analysis.failure_test(3, 5, 0, 5) == pytest.approx(1 / 6)  # 3 of 5 against 0 of 5
    assert analysis.adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])


def test_budget_curve_is_the_best_so_far_over_random_orders():
    curve = analysis.budget_curve([1.0, 3.0, 2.0], higher_is_better=True, orders=4000)
    assert list(curve.k) == [1, 2, 3]
    # E[max of k drawn without replacement]: k=1 the mean 2, k=2 (3 + 2 + 3)/3, k=3 the max.
    assert curve.mean == pytest.approx([2.0, 8 / 3, 3.0], abs=0.05)
    assert (curve.low[0], curve.high[0]) == (1.0, 3.0) and curve.low[2] == curve.high[2] == 3
    lower = analysis.budget_curve([50.0, float("nan"), 30.0], higher_is_better=False)
    assert lower.mean[-1] == 30.0  # a diverged trial never counts as the best


# --- groups, failures, verdict ---------------------------------------------------------

def test_a_grid_over_a_non_default_axis_gives_separate_named_groups(tmp_path):
    for seed in (0, 1):
        for lr in (1e-4, 2e-4):
            write_run(tmp_path, f"lr{lr}-s{seed}", [5.0, 6.0], lr_g=lr, seed=seed)
    groups = analysis.group_runs(analysis.find_runs(str(tmp_path)))["digits"]
    assert list(groups) == ["nonsat / bce, lr_g=0.0001", "nonsat / bce, lr_g=0.0002"]
    assert [len(runs) for runs in groups.values()] == [2, 2]
    assert [r.config["seed"] for r in groups["nonsat / bce, lr_g=0.0001"]] == [0, 1]


def test_divergence_and_collapse_count_as_failures_with_where_and_why(tmp_path):
    write_run(tmp_path, "ok", [5.0, 6.0])
    write_run(tmp_path, "diverged", [5.0], diverged_at=2)
    write_run(tmp_path, "collapsed", [2.0, 1.5], recall=0.02)
    runs = {os.path.basename(r.dir): r for r in analysis.find_runs(str(tmp_path))}
    keys = analysis.Keys.for_runs(list(runs.values()))
    assert analysis.failure(runs["ok"], keys) == ""
    assert analysis.failure(runs["diverged"], keys) == (
        "diverged in epoch 2, step 53 (d_loss = nan)")
    assert analysis.failure(runs["collapsed"], keys) == (
        "collapsed: final recall 0.020 < 0.1")


def test_verdict_claims_a_difference_only_when_the_numbers_carry_it(tmp_path):
    for seed in range(5):
        write_run(tmp_path, f"nonsat-{seed}", [7.0 + 0.1 * seed], g_loss="nonsat", seed=seed)
        # hinge: the same scores in another order -> not distinguishable.
        write_run(tmp_path, f"hinge-{seed}", [7.0 + 0.1 * (4 - seed)], g_loss="hinge", seed=seed)
        # minimax: lower in every seed, and 3 of 5 collapsed.
        write_run(tmp_path, f"minimax-{seed}", [2.0 + 0.1 * seed], g_loss="minimax",
                  seed=seed, recall=0.01 if seed < 3 else 0.5)
    text = open(report.write_report(str(tmp_path))).read()
    verdict = text.split("### Verdict")[1].split("###")[0]
    assert "reference: nonsat / bce" in verdict and "n = 5 runs per loss" in verdict
    minimax = verdict.split("*minimax / bce*:")[1].split("*hinge")[0]
    assert "final digits score is worse than nonsat's" in minimax
    assert "Mann–Whitney p = 0.00794" in minimax and "P(minimax better) = 0.00" in minimax
    hinge = verdict.split("*hinge / hinge*:")[1]
    assert "not distinguishable from nonsat at n = 5" in hinge
    assert "Mann–Whitney p = 1" in hinge
    groups = text.split("### Groups")[1]
    assert "| minimax / bce | 5 | 3 |" in groups  # n and failures
    assert "### Failed runs" in text and "collapsed: final recall 0.010" in text


def test_at_two_runs_the_verdict_says_no_test_could_decide(tmp_path):
    for seed in range(2):
        write_run(tmp_path, f"nonsat-{seed}", [7.0 + seed], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [1.0 + seed], g_loss="hinge", seed=seed)
    text = open(report.write_report(str(tmp_path))).read()
    assert "not distinguishable from nonsat at n = 2" in text
    assert "no outcome could give p below 0.33" in text


def test_unfinished_runs_are_listed_and_left_out_of_every_number(tmp_path):
    for seed in range(2):
        write_run(tmp_path, f"nonsat-{seed}", [6.0, 7.0], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [5.0, 6.0], g_loss="hinge", seed=seed)
    write_run(tmp_path, "hinge-2", [1.0], g_loss="hinge", seed=2, epochs=2)
    runs = {os.path.basename(r.dir): r for r in analysis.find_runs(str(tmp_path))}
    assert runs["nonsat-0"].finished and not runs["hinge-2"].finished
    text = open(report.write_report(str(tmp_path))).read()
    assert "4 runs finished (0 of them in a random search); 1 unfinished" in text
    assert "| hinge-2 | 1 of 2 |" in text.split("## Unfinished runs")[1]
    groups = text.split("### Groups")[1]
    assert "| hinge / hinge | 2 | 0 |" in groups  # n = 2: the stopped run is not a seed


def test_report_has_every_figure_as_a_real_png(tmp_path):
    for loss in ("minimax", "hinge"):
        for seed in range(2):
            write_run(tmp_path, f"{loss}-{seed}", [3.0, 4.0], g_loss=loss, seed=seed,
                      diverged_at=3 if (loss, seed) == ("minimax", 1) else None)
    path = report.write_report(str(tmp_path))
    text = open(path).read()
    figures = [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".png")]
    assert sorted(figures) == sorted(f"digits_{name}.png" for name in (
        "score", "fid", "recall", "precision", "g_grad_norm", "d_fake_prob", "losses",
        "samples"))
    for figure in figures:
        assert f"({figure})" in text
        data = open(os.path.join(os.path.dirname(path), figure), "rb").read()
        assert tf.io.decode_png(data).shape[0] > 100  # decodes as a real image
    header = next(line for line in text.splitlines() if line.startswith("| group"))
    for column in ("final score", "best score", "final FID", "final KID", "final recall",
                   "failed", "minutes"):
        assert column in header


def test_a_search_gets_budget_curves_per_loss(tmp_path):
    drawn = grid.expand({"g_loss": ["nonsat", "hinge"], "epochs": [2]},
                        root=str(tmp_path / "search"), search_count=4)
    for number, config in enumerate(drawn.configs):
        write_run(os.path.dirname(config.run_dir), os.path.basename(config.run_dir),
                  [3.0, 4.0 + number], **{k: getattr(config, k) for k in (
                      "g_loss", "lr_g", "lr_d", "beta1", "beta2", "d_steps", "seed")})
    grid.write_search(drawn)
    runs = analysis.find_runs(str(tmp_path))
    assert sorted(r.trial for r in runs) == [0, 0, 1, 1, 2, 2, 3, 3]
    text = open(report.write_report(str(tmp_path))).read()
    assert "## digits: random search" in text and "digits_search_budget.png" in text
    assert "| nonsat / bce | 4 | 0 |" in text and "vs nonsat over settings" in text
    assert os.path.exists(tmp_path / "report" / "digits_search_budget.png")


def test_report_of_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no run directories"):
        report.write_report(str(tmp_path))


def test_report_command_rejects_a_missing_directory(tmp_path):
    result = run_command("-m", "tfgan_exp.report", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a directory" in result.stderr
    assert "Traceback" not in result.stderr
