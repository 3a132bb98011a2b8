"""The report for every grid: groups, failures, the verdict with effect sizes and power,
searches and tuned re-runs, anchors, provenance and figures.

The run folders here are written with the run directory's own writer (RunDir), with
made-up metrics: the report reads files, so it is tested on files, without training.
"""
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_command
from tfgan_exp.report import analysis, writer
from tfgan_exp.grids import grid
from tfgan_exp.grids import search as search_lib
from tfgan_exp.config import Config, UsageError
from tfgan_exp.rundir import RunDir

ANCHOR = {"digits_score": 9.92, "digits_score_mean_10": 9.55, "digits_score_std": 0.29,
          "digits_fid": 5.29, "digits_kid": 0.0056, "digits_kid_std": 3.85,
          "digits_precision": 0.909, "digits_recall": 0.904, "digits_classes": 10,
          "digits_class_kl": 0.007}


def write_run(root, name, scores, recall=0.6, diverged_at=None, epochs=None, classes=10,
              precision=0.3, made_with=None, **settings):
    """A run folder as training writes it: one record per epoch with digits metrics
    (``epochs`` asked for, default one per score: a run stopped early has fewer)."""
    config = Config(dataset="digits", epochs=epochs or len(scores),
                    run_dir=os.path.join(root, name), **settings).resolved()
    run_dir = RunDir(config.run_dir)
    run_dir.prepare(config)
    for epoch, score in enumerate(scores, start=1):
        run_dir.append_metrics({
            "epoch": epoch, "step": 28 * epoch, "d_loss": 1.2, "g_loss": 0.8,
            "g_grad_norm": 1.0, "d_fake_prob": 0.3, "seconds": 2.0, "eval_seconds": 0.5,
            "digits_score": score, "digits_score_mean_10": score - 0.1,
            "digits_score_std": 0.05, "digits_fid": 100.0 / score, "digits_kid": 10.0 / score,
            "digits_kid_std": 1.0, "digits_precision": precision, "digits_recall": recall,
            "digits_classes": classes, "digits_class_kl": 0.01 if classes == 10 else 1.5})
    image = tf.io.encode_png(np.zeros((16, 16, 1), np.uint8)).numpy()
    with open(os.path.join(run_dir.samples_dir, f"epoch_{len(scores):04d}.png"), "wb") as f:
        f.write(image)
    if diverged_at:
        run_dir.record_divergence({"epoch": diverged_at, "step": 28 * diverged_at - 3,
                                   "values": {"d_loss": "nan"}, "checkpoint": "ckpt-x",
                                   "host": "node7"})
    run_dir.write_reference({"classifier": "digits", "num_generated": 2000,
                             "num_compared": 898, "num_reference": 898, "anchor": ANCHOR})
    run_dir.write_attempts([dict({"code": {"version": "0.1.0", "git_commit": "abc1234567890"},
                                  "tensorflow": "2.21.0", "cpu": "AMD EPYC",
                                  "devices": ["CPU"]}, **(made_with or {}))])
    return config


def report_text(root, **kwargs):
    return open(writer.write_report(str(root), **kwargs)).read()


def section(text, start, end="\n## "):
    return text.split(start, 1)[1].split(end, 1)[0]


# --- groups and failures ----------------------------------------------------------------

def test_a_grid_over_a_non_default_axis_gives_separate_named_groups(tmp_path):
    for seed in (0, 1):
        for lr in (1e-4, 2e-4):
            write_run(tmp_path, f"lr{lr}-s{seed}", [5.0, 6.0], lr_g=lr, seed=seed)
    groups = analysis.group_runs(analysis.find_runs(str(tmp_path)))["digits"]
    assert list(groups) == ["nonsat / bce, lr_g=0.0001", "nonsat / bce, lr_g=0.0002"]
    assert [len(runs) for runs in groups.values()] == [2, 2]
    assert [r.config["seed"] for r in groups["nonsat / bce, lr_g=0.0001"]] == [0, 1]


def test_failures_diverged_did_not_learn_and_collapsed_by_classes_covered(tmp_path):
    write_run(tmp_path, "ok", [5.0, 6.0], seed=0)
    write_run(tmp_path, "diverged", [5.0], diverged_at=2, seed=1)
    write_run(tmp_path, "one-digit", [2.0, 1.5], classes=1, recall=0.099, precision=0.6, seed=2)
    write_run(tmp_path, "two-digits", [3.0, 2.5], classes=2, recall=0.2, precision=0.6, seed=3)
    write_run(tmp_path, "eight-digits", [5.0, 5.5], classes=8, recall=0.05, precision=0.4,
              seed=4)
    write_run(tmp_path, "noise", [1.0, 1.0], classes=1, recall=0.0, precision=0.0, seed=5)
    runs = {os.path.basename(r.dir): r for r in analysis.find_runs(str(tmp_path))}
    keys = analysis.Keys.for_runs(list(runs.values()))
    failure = {name: analysis.failure(run, keys) for name, run in runs.items()}
    assert failure["ok"] == "" and failure["eight-digits"] == ""  # recall is a second signal
    assert failure["diverged"] == "diverged in epoch 2, step 53 (d_loss = nan) on node7"
    # Partial collapse counts (recall 0.20 would not have), ...
    assert failure["one-digit"].startswith("collapsed: covers 1 of 10 digits")
    assert failure["two-digits"].startswith("collapsed: covers 2 of 10 digits")
    # ... and a generator that has not learned is not called collapsed.
    assert failure["noise"].startswith("did not learn: final precision 0.000")


# --- the verdict ---------------------------------------------------------------------------

@pytest.mark.slow
def test_verdict_gives_shifts_p_better_and_claims_only_what_the_tests_carry(tmp_path):
    for seed in range(5):
        write_run(tmp_path, f"nonsat-{seed}", [7.0 + 0.1 * seed], g_loss="nonsat", seed=seed)
        # hinge: the same scores in another order -> no difference.
        write_run(tmp_path, f"hinge-{seed}", [7.0 + 0.1 * (4 - seed)], g_loss="hinge", seed=seed)
        # minimax: lower in every seed, and 3 of 5 collapsed.
        write_run(tmp_path, f"minimax-{seed}", [2.0 + 0.1 * seed], g_loss="minimax",
                  seed=seed, classes=1 if seed < 3 else 10)
    text = report_text(tmp_path)
    verdict = section(text, "### Verdict", "###")
    assert "reference: nonsat / bce" in verdict and "n = 5 runs per loss" in verdict
    minimax = verdict.split("*minimax / bce*")[1].split("*hinge")[0]
    assert "final digits score: shift -5.00 [-5.30, -4.70]" in minimax
    assert "P(minimax better) = 0.00 [0.00, 0." in minimax  # an interval even at 0
    assert "Mann–Whitney p = 0.00794" in minimax and "**Worse digits score, worse FID" in minimax
    hinge = verdict.split("*hinge / hinge*")[1]
    assert "shift +0.00 [" in hinge and "P(hinge better) = 0.50 [" in hinge
    assert "**No difference detected** from nonsat at this n" in hinge
    # What the test could detect at this n, and the runs for 80% power.
    # Benjamini-Hochberg: alpha / 6 for a difference found on its own, alpha for all 6.
    assert ("At 5 against 5 runs, p must be below 0.05 / 6 = 0.0083 for a difference "
            "found on its own, 0.05 when all 6 tests") in verdict
    assert ("On its own it takes complete separation (P(better) = 0 or 1); together it "
            "takes P(better) ≥ 0.92 or ≤ 0.08.") in verdict
    assert "Runs per loss for 80% power" in verdict and "minimax: about" in verdict
    assert "hinge: none (no difference seen to detect)" in verdict  # the same scores
    groups = section(text, "### Groups", "###")
    assert "| minimax / bce | 5 | 3 | 0 | 93.8% | 2.200 [2.000, 2.400] |" in groups
    assert "### Failed runs" in text and "covers 1 of 10 digits" in text


@pytest.mark.slow
def test_what_a_test_can_detect_agrees_with_the_claims_benjamini_hochberg_makes(tmp_path):
    """4 against 4, separated on the score and the FID: each p = 2/70 is above 0.05 / 3
    but both pass Benjamini-Hochberg together; the sentence must not deny it."""
    for seed in range(4):
        write_run(tmp_path, f"nonsat-{seed}", [7.0 + 0.1 * seed], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [8.0 + 0.1 * seed], g_loss="hinge", seed=seed)
    verdict = section(report_text(tmp_path), "### Verdict", "###")
    assert "**Better digits score, better FID** than nonsat" in verdict
    assert "no outcome can be significant" not in verdict
    assert ("On its own no outcome reaches that (the smallest possible p is 0.029); "
            "together it takes complete separation") in verdict


@pytest.mark.slow
def test_equivalence_is_claimed_only_inside_the_margin(tmp_path):
    for seed in range(8):
        write_run(tmp_path, f"nonsat-{seed}", [7.0 + 0.01 * seed], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [7.0 + 0.01 * ((seed * 3) % 8)], g_loss="hinge",
                  seed=seed)
    wide = report_text(tmp_path, equivalence_margin=0.5)
    assert "**equivalent** in digits score within ±0.5" in wide
    narrow = report_text(tmp_path, equivalence_margin=0.01)
    assert "equivalence within ±0.01 not shown" in narrow
    assert "equivalent" not in report_text(tmp_path)  # no margin, no claim
    with pytest.raises(UsageError, match="--equivalence_margin=-1"):
        writer.write_report(str(tmp_path), equivalence_margin=-1)


# --- every shape of grid -----------------------------------------------------------------

@pytest.mark.slow
def test_one_run_per_loss_gives_values_and_says_how_many_runs_a_test_needs(tmp_path):
    write_run(tmp_path, "g_loss=minimax", [5.0, 5.5], g_loss="minimax")
    write_run(tmp_path, "g_loss=nonsat", [6.0, 7.0], g_loss="nonsat")
    text = report_text(tmp_path)
    verdict = section(text, "### Verdict", "###")
    assert "final digits score 5.50 against 7.00" in verdict
    assert "**Not testable**: with a single run on one side" in verdict
    assert "n = 1 run per loss" in verdict
    assert ("A test needs at least 5 runs per loss here to be significant on its own (4 "
            "if all 3 tests in this paragraph were significant together)") in verdict
    groups = section(text, "### Groups", "###")
    assert "| minimax / bce | 1 | 0 | 0 | – | 5.500 |" in groups  # a value, no interval
    assert os.path.exists(tmp_path / "report" / "digits_final.png")


@pytest.mark.slow
def test_one_run_against_five_and_a_group_where_every_run_diverged(tmp_path):
    for seed in range(5):
        write_run(tmp_path, f"nonsat-{seed}", [6.0 + 0.1 * seed], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [3.0], g_loss="hinge", seed=seed,
                  diverged_at=1)
    write_run(tmp_path, "minimax-0", [5.0], g_loss="minimax")
    text = report_text(tmp_path)
    verdict = section(text, "### Verdict", "###")
    minimax = verdict.split("*minimax / bce*")[1].split("\n")[0]
    assert "(1 run)" in minimax and "(66.7%)" in minimax  # the widest interval, its level
    assert "**Not testable**: with a single run on one side" in minimax
    hinge = verdict.split("*hinge / hinge*")[1].split("\n")[0]
    assert "no shift (no run with a value on one side)" in hinge
    assert "P(hinge better) = 0.00 [" in hinge and "failed in 5 of 5 runs" in hinge
    # Every hinge run ranks below every nonsat run, and fails: p = 2/252 for each.
    assert "**Worse digits score, worse FID, fails more often** than nonsat" in hinge
    assert "At 1 against 5 runs" in verdict and "no outcome can be significant" in verdict
    assert "needs at least 5 runs per loss (4 if all tests are significant" in verdict
    groups = section(text, "### Groups", "###")
    assert "| hinge / hinge | 5 | 5 | 5 | – | – |" in groups


def test_a_grid_of_unfinished_runs_only_lists_them(tmp_path):
    write_run(tmp_path, "g_loss=minimax", [5.0], g_loss="minimax", epochs=3)
    write_run(tmp_path, "g_loss=nonsat", [6.0], g_loss="nonsat", epochs=3)
    text = report_text(tmp_path)
    assert "0 runs finished" in text and "2 unfinished" in text
    assert "| g_loss=minimax | 1 of 3 |" in section(text, "## Unfinished runs")
    assert "### Verdict" not in text


@pytest.mark.slow
def test_unfinished_runs_are_listed_and_left_out_of_every_number(tmp_path):
    for seed in range(2):
        write_run(tmp_path, f"nonsat-{seed}", [6.0, 7.0], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [5.0, 6.0], g_loss="hinge", seed=seed)
    write_run(tmp_path, "hinge-2", [1.0], g_loss="hinge", seed=2, epochs=2)
    text = report_text(tmp_path)
    assert "4 runs finished (0 of them in a random search, 0 in a tuned re-run); 1 unfinished" in text
    assert "| hinge-2 | 1 of 2 |" in section(text, "## Unfinished runs")
    assert "| hinge / hinge | 2 | 0 |" in section(text, "### Groups")  # not a seed


@pytest.mark.slow
def test_one_run_in_two_folders_counts_once_as_the_one_that_trained_further(tmp_path):
    for seed in range(2):
        write_run(tmp_path, f"old/g_loss=hinge,seed={seed}", [5.0, 6.0], g_loss="hinge",
                  seed=seed)
        write_run(tmp_path, f"old/g_loss=nonsat,seed={seed}", [6.0, 7.0], g_loss="nonsat",
                  seed=seed)
    # The same run again, under the name a wider grid gives it, stopped after one epoch.
    write_run(tmp_path, "new/g_loss=hinge,spectral_norm=false,seed=0", [4.0], g_loss="hinge",
              seed=0, epochs=2)
    runs = analysis.find_runs(str(tmp_path))
    assert len(runs) == 4
    kept = next(r for r in runs if r.duplicates)
    assert kept.dir.endswith("old/g_loss=hinge,seed=0") and kept.last_epoch == 2
    text = report_text(tmp_path)
    assert "| hinge / hinge | 2 | 0 |" in section(text, "### Groups")  # n = 2, not 3
    duplicates = section(text, "## Runs found in more than one folder")
    assert "old/g_loss=hinge,seed=0 | new/g_loss=hinge,spectral_norm=false,seed=0" in duplicates
    assert "unfinished" not in text.split("##")[0]  # the stopped copy is not a run of its own


@pytest.mark.slow
def test_the_anchor_row_and_the_set_sizes_are_stated(tmp_path):
    for loss in ("minimax", "nonsat"):
        write_run(tmp_path, loss, [6.0], g_loss=loss)
    groups = section(report_text(tmp_path), "### Groups", "###")
    assert "| *real against real (anchor)* | – | – | – | – | 9.920 | 9.550 | 5.3 | 0.01 |" in groups
    assert "| 0.909 | 0.904 | 10 | 0.01 |" in groups  # digits covered: a count
    assert ("compare the first 898 of them with 898 real images" in groups
            and "over 2,000 generated images" in groups)


@pytest.mark.slow
def test_made_with_lists_the_software_and_warns_when_a_comparison_mixes_them(tmp_path):
    for seed in range(3):
        write_run(tmp_path, f"nonsat-{seed}", [6.0 + seed], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [6.0 + seed], g_loss="hinge", seed=seed,
                  made_with={"cpu": "Intel Xeon"} if seed == 2 else None)
    text = report_text(tmp_path)
    made_with = section(text, "## Made with")
    assert "**They differ.**" in made_with
    assert "| tfgan_exp 0.1.0 (abc1234567), TensorFlow 2.21.0, AMD EPYC, CPU | 5 |" in made_with
    assert "Intel Xeon, CPU | 1 |" in made_with
    verdict = section(text, "### Verdict", "###")
    assert "made with 2 different software or machines" in verdict
    assert "versions of this tool" not in verdict  # one version made them all
    # Resumed by another version of the code, on the same machine: said, less gravely.
    run_dir = RunDir(str(tmp_path / "hinge-0"))
    run_dir.write_attempts(run_dir.attempts() + [dict(run_dir.attempts()[0], code={
        "version": "0.1.0", "git_commit": "def4567890123"})])
    for seed in (1, 2):
        made = RunDir(str(tmp_path / f"hinge-{seed}"))
        made.write_attempts([dict(made.attempts()[0], cpu="AMD EPYC")])
    verdict = section(report_text(tmp_path), "### Verdict", "###")
    assert "2 versions of this tool" in verdict and "software or machines" not in verdict


def random_grid(root, rng):
    """A grid of made-up runs in a random shape: 1-3 losses of 0-6 runs (one loss has
    at least one), sometimes crossed with spectral_norm, with diverged, collapsed and
    unfinished runs, tied scores, and its first sound run copied into a second folder.
    Returns {(g_loss, spectral_norm): [finished, failed, diverged]} as it wrote them."""
    expected = {}
    losses = rng.sample(["minimax", "nonsat", "hinge"], rng.randint(1, 3))
    norms = rng.choice([[False], [True, False]])
    tied = rng.random() < 0.3
    epochs = rng.randint(1, 3)
    copied = None
    for loss in losses:
        base = rng.uniform(2.0, 8.0)
        for norm in norms:
            counts = expected.setdefault((loss, norm), [0, 0, 0])
            for seed in range(rng.choice([0, 1, 1, 2, 3, 5, 6]) or (loss == losses[0])):
                name = f"sn={norm}/{loss}-{seed}"
                scores = [round(base) if tied else base + rng.gauss(0, 0.7)] * epochs
                fate = rng.random()
                kwargs = dict(g_loss=loss, seed=seed, spectral_norm=norm, epochs=epochs)
                if fate < 0.1:  # unfinished: stopped before its last epoch
                    if epochs > 1:
                        write_run(root, name, scores[:-1], **kwargs)
                    continue
                if fate < 0.25:
                    write_run(root, name, scores, diverged_at=epochs, **kwargs)
                    counts[2] += 1
                elif fate < 0.35:
                    write_run(root, name, scores, classes=1, recall=0.05, **kwargs)
                else:
                    write_run(root, name, scores, **kwargs)
                    if not copied:  # the same run again, in another folder
                        copied = write_run(root, f"copy/{name}", scores, **kwargs)
                counts[0] += 1
                counts[1] += fate < 0.35
    return {key: counts for key, counts in expected.items() if counts[0]}


@pytest.mark.slow
@pytest.mark.parametrize("shape", range(6))
def test_a_grid_of_any_shape_gets_a_report_that_counts_every_run_once(tmp_path, shape):
    expected = random_grid(tmp_path, random.Random(shape))
    text = report_text(tmp_path, equivalence_margin=0.5)
    finished = sum(counts[0] for counts in expected.values())
    assert f"{finished} run{'s' if finished != 1 else ''} finished (" in text
    groups = analysis.group_runs([r for r in analysis.find_runs(str(tmp_path)) if r.finished])
    table = section(text, "### Groups", "\nEach cell")
    seen = {}
    for label, runs in groups["digits"].items():
        keys = {(r.config["g_loss"], r.config["spectral_norm"]) for r in runs}
        assert len(keys) == 1, label  # a group is one setting
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        seen[keys.pop()] = [int(cell) for cell in row.split("|")[2:5]]
    assert seen == expected
    if len(expected) > 1:  # every group but the reference is weighed against it
        verdict = section(text, "### Verdict", "\n### ")
        assert verdict.count("- *") >= 1

# --- searches and tuned re-runs -----------------------------------------------------------

def write_search(root, losses, count, score_of, extra=None, search_seed=0, failed=()):
    """A search's folders as the grid names them, with made-up final scores."""
    drawn = grid.expand(dict({"g_loss": losses, "epochs": [2]}, **(extra or {})),
                        root=str(root), search_count=count, search_seed=search_seed)
    for config in drawn.configs:
        trial = int(config.run_dir.split("trial=")[1].split(",")[0])
        score = score_of(config, trial)
        write_run(os.path.dirname(config.run_dir), os.path.basename(config.run_dir),
                  [3.0, score], classes=1 if (config.g_loss, trial) in failed else 10,
                  **{k: getattr(config, k) for k in (
                      "g_loss", "lr_g", "lr_d", "beta1", "beta2", "d_steps", "seed",
                      "spectral_norm")})
    grid.write_search(drawn)
    return drawn


def test_a_search_is_paired_setting_by_setting_and_failed_settings_count_worst(tmp_path):
    losses = {"nonsat": 5.0, "hinge": 6.0, "minimax": 4.0}
    write_search(tmp_path / "search", list(losses), 4,
                 lambda c, trial: losses[c.g_loss] + 0.1 * trial,
                 failed={("minimax", 0), ("minimax", 1)})
    text = report_text(tmp_path)
    search = section(text, "## digits: random search")
    assert "4 distinct settings in all" in search and "tried by 3 losses: 12 runs" in search
    assert "each of 2 epochs, with seed 0" in search
    assert "| minimax / bce | 4 | 2 |" in search  # 2 failed settings
    hinge = search.split("- *hinge / hinge*")[1].split("\n")[0]
    assert "higher digits score in 4 of 4 settings, lower in 0" in hinge
    # Budget curves count the failed settings as the worst value reached.
    assert "Failed settings: minimax 2 of 4; nonsat 0 of 4; hinge 0 of 4." in search
    assert "digits_search_budget.png" in search


def test_a_search_crossed_with_another_axis_or_repeated_is_never_pooled(tmp_path):
    # Spectral norm on: scores 8; off: 2. Pooled, they would read as one setting at 5.
    write_search(tmp_path / "search", ["nonsat", "hinge"], 2,
                 lambda c, trial: 8.0 if c.spectral_norm else 2.0,
                 extra={"spectral_norm": [False, True]})
    write_search(tmp_path / "search", ["nonsat", "hinge"], 2, lambda c, trial: 6.0,
                 search_seed=0)  # the same draws again, without the axis: same settings
    comparisons = analysis.search_comparisons(
        [r for r in analysis.find_runs(str(tmp_path)) if r.search_root])
    assert sorted(c.context for c in comparisons) == ["spectral_norm=false",
                                                      "spectral_norm=true"]
    for comparison in comparisons:
        keys = analysis.Keys.for_runs(comparison.runs)
        values = comparison.values(keys.score, keys, True)
        expected = 8.0 if comparison.context == "spectral_norm=true" else 2.0
        assert {v for by in values.values() for v in by.values()} == {expected}
    text = report_text(tmp_path)
    assert "## digits: random search (spectral_norm=true)" in text
    # A second search with other draws, in a folder of its own: its own settings.
    write_search(tmp_path / "search2", ["nonsat", "hinge"], 2, lambda c, t: 5.0, search_seed=7)
    search2 = [c for c in analysis.search_comparisons(
        [r for r in analysis.find_runs(str(tmp_path / "search2")) if r.search_root])]
    assert len(search2[0].settings) == 2


def test_searches_over_other_losses_or_unfinished_are_compared_on_shared_settings(tmp_path):
    # Two searches (other draws) in one root, over different losses: one section each.
    write_search(tmp_path / "s1", ["nonsat", "hinge"], 3, lambda c, t: 5.0 + t)
    write_search(tmp_path / "s2", ["nonsat", "minimax"], 3, lambda c, t: 4.0 + t,
                 search_seed=7)
    text = report_text(tmp_path)
    for folder, other in (("s1", "hinge / hinge"), ("s2", "minimax / bce")):
        search = section(text, f"## digits: random search ({folder})")
        assert "3 distinct settings in all" in search and "6 runs" in search
        assert f"| {other} | 3 | 0 |" in search and "| nonsat / bce | 3 | 0 |" in search
    # A search whose hinge trial 2 is unfinished: compared on the 2 settings all met.
    write_search(tmp_path / "s3" / "search", ["nonsat", "hinge"], 3,
                 lambda c, t: 8.0 if t == 2 else 5.0)
    unfinished = next((tmp_path / "s3" / "search").glob("g_loss=hinge,trial=2*"))
    lines = (unfinished / "metrics.jsonl").read_text().splitlines(keepends=True)
    (unfinished / "metrics.jsonl").write_text(lines[0])
    search = section(report_text(tmp_path / "s3"), "## digits: random search")
    assert "1 of the 3 settings was not tried by every loss" in search
    assert "| nonsat / bce | 2 | 0 | 5.000" in search  # not its best of 3, 8.0
    assert "higher digits score in 0 of 2 settings" in search


def test_a_search_trial_that_is_also_a_plain_run_counts_once_in_each_analysis(tmp_path):
    """A plain grid at the first drawn setting, with the search's seed and epochs: its
    seed-0 runs are the search's trial 0, which stays in the search's paired design."""
    drawn = write_search(tmp_path / "search", ["nonsat", "hinge"], 3,
                         lambda c, trial: 5.0 + trial + (c.g_loss == "hinge"))
    first = drawn.search["trials"][0]
    for loss in ("nonsat", "hinge"):
        for seed in range(3):
            write_run(tmp_path / "grid", f"g_loss={loss},seed={seed}",
                      [3.0, 5.0 + (loss == "hinge") + 0.1 * seed], g_loss=loss, seed=seed,
                      **{k: first[k] for k in search_lib.SEARCHED_FIELDS})
    runs = analysis.find_runs(str(tmp_path))
    assert sum(bool(r.search_root) for r in runs) == 6 and len(runs) == 12
    assert not any(r.duplicates for r in runs)  # not the same run twice in one analysis
    text = report_text(tmp_path)
    assert text.split("\n")[2].startswith("10 runs finished (6 of them in a random search")
    search = section(text, "## digits: random search")
    assert "3 distinct settings in all" in search and "tried by 2 losses: 6 runs" in search
    assert "| nonsat / bce | 3 | 0 | 0 |" in section(text, "### Groups")  # seeds 0, 1, 2


@pytest.mark.slow
def test_tuned_rerun_takes_each_losss_best_setting_and_is_reported_as_a_verdict(tmp_path):
    write_search(tmp_path / "search", ["nonsat", "hinge"], 3,
                 lambda c, trial: {0: 5.0, 1: 7.0, 2: 6.0}[trial] + (0.5 if c.g_loss == "hinge"
                                                                      else 0))
    best, notes = analysis.best_settings(str(tmp_path / "search"))
    assert notes == []
    drawn = grid.expand({"g_loss": ["nonsat"]}, search_count=3).search["trials"]
    assert {tuple(sorted(s.items())) for s in best.values()} == {
        tuple(sorted((k, drawn[1][k]) for k in ("lr_g", "lr_d", "beta1", "beta2", "d_steps")))}
    tuned = tmp_path / "tuned"
    for loss in ("nonsat", "hinge"):
        setting = next(s for k, s in best.items() if ("g_loss", loss) in k)
        for seed in (100, 101, 102):
            write_run(tuned, f"g_loss={loss},seed={seed}", [6.0 + (loss == "hinge")],
                      g_loss=loss, seed=seed, **setting)
    with open(tuned / "tuned.json", "w") as f:
        json.dump({"from": str(tmp_path / "search")}, f)
    text = report_text(tmp_path)
    tuned_text = section(text, "## digits: tuned re-run")
    assert "seeds the search did not use (100, 101, 102)" in tuned_text
    assert "*hinge / hinge* (3 runs)" in tuned_text and "### Groups" in tuned_text
    assert "## digits\n" not in text  # tuned runs are not plain groups


# --- figures and errors ----------------------------------------------------------------------

def test_a_tuned_rerun_is_checked_against_the_search_as_it_is_now(tmp_path):
    """The re-run followed trial 1, but the search, extended since, is best at trial 2;
    and one loss's re-run took seed 0, which the search used."""
    drawn = write_search(tmp_path / "search", ["nonsat", "hinge"], 3,
                         lambda c, trial: 5.0 + trial)
    followed = drawn.search["trials"][1]
    for loss, seeds in (("nonsat", (100, 101)), ("hinge", (0, 101))):
        for seed in seeds:
            write_run(tmp_path / "tuned", f"g_loss={loss},seed={seed}", [6.0], g_loss=loss,
                      seed=seed, **{k: followed[k] for k in search_lib.SEARCHED_FIELDS})
    with open(tmp_path / "tuned" / "tuned.json", "w") as f:
        json.dump({"search": str(tmp_path / "search")}, f)
    tuned = section(report_text(tmp_path), "## digits: tuned re-run")
    assert "with seeds of which the search used 0 too (0, 100, 101)" in tuned
    assert "**The search has changed since this re-run**: its best setting is now" in tuned
    best = drawn.search["trials"][2]
    assert f"nonsat / bce: lr_g={grid.format_value(best['lr_g'])}, " in tuned


@pytest.mark.slow
def test_report_has_every_figure_as_a_real_png(tmp_path):
    for loss in ("minimax", "hinge"):
        for seed in range(2):
            write_run(tmp_path, f"{loss}-{seed}", [3.0, 4.0], g_loss=loss, seed=seed,
                      diverged_at=3 if (loss, seed) == ("minimax", 1) else None)
    path = writer.write_report(str(tmp_path))
    text = open(path).read()
    figures = [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".png")]
    assert sorted(figures) == sorted(f"digits_{name}.png" for name in (
        "final", "score", "fid", "recall", "precision", "classes", "g_grad_norm",
        "d_fake_prob", "losses", "samples"))
    for figure in figures:
        assert f"({figure})" in text
        data = open(os.path.join(os.path.dirname(path), figure), "rb").read()
        assert tf.io.decode_png(data).shape[0] > 100  # decodes as a real image
    header = next(line for line in text.splitlines() if line.startswith("| group"))
    for column in ("final digits score", "10 splits (mean)", "final FID", "final KID",
                   "precision", "recall", "digits covered", "class KL",
                   "best digits score†", "failed", "minutes"):
        assert column in header


def test_report_of_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no run directories"):
        writer.write_report(str(tmp_path))


@pytest.mark.slow
def test_report_command_rejects_a_missing_directory_and_a_bad_margin(tmp_path):
    result = run_command("-m", "tfgan_exp.report", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    write_run(tmp_path, "one", [5.0])
    result = run_command("-m", "tfgan_exp.report", str(tmp_path), "--equivalence_margin=-2")
    assert result.returncode == 2 and result.stderr.startswith("error: --equivalence_margin")


@pytest.mark.slow
def test_equivalence_is_never_claimed_over_diverged_runs(tmp_path):
    for seed in range(5):
        write_run(tmp_path, f"nonsat-{seed}", [7.0 + 0.01 * seed], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [7.0 + 0.01 * seed], g_loss="hinge", seed=seed,
                  diverged_at=1 if seed < 3 else None)
    hinge = section(report_text(tmp_path, equivalence_margin=0.5), "### Verdict", "###")
    assert "equivalence within ±0.5 cannot be shown: 3 runs diverged" in hinge
    assert "**equivalent**" not in hinge
    assert "shift over the 2 and 5 runs with a value" in hinge


@pytest.mark.slow
def test_a_finished_run_without_a_final_score_is_a_failure(tmp_path):
    for seed in range(3):
        write_run(tmp_path, f"nonsat-{seed}", [7.0], g_loss="nonsat", seed=seed)
        write_run(tmp_path, f"hinge-{seed}", [float("nan") if seed == 0 else 7.0],
                  g_loss="hinge", seed=seed)
    runs = {os.path.basename(r.dir): r for r in analysis.find_runs(str(tmp_path))}
    keys = analysis.Keys.for_runs(list(runs.values()))
    assert analysis.failure(runs["hinge-0"], keys) == "no final digits score: nan"
    assert "failed in 1 of 3 runs" in section(report_text(tmp_path), "### Verdict", "###")


@pytest.mark.slow
def test_a_tuned_rerun_inside_its_search_folder_is_not_a_search_trial(tmp_path):
    search_dir = tmp_path / "search"
    write_search(search_dir, ["nonsat", "hinge"], 2, lambda c, trial: 5.0 + trial)
    best, _ = analysis.best_settings(str(search_dir))
    for loss in ("nonsat", "hinge"):
        setting = next(s for k, s in best.items() if ("g_loss", loss) in k)
        for seed in (100, 101):
            write_run(search_dir / "tuned", f"g_loss={loss},seed={seed}", [6.0], g_loss=loss,
                      seed=seed, **setting)
    with open(search_dir / "tuned" / "tuned.json", "w") as f:
        json.dump({"search": str(search_dir)}, f)
    runs = analysis.find_runs(str(tmp_path))
    assert {r.config["seed"] for r in runs if r.search_root} == {0}
    assert {r.config["seed"] for r in runs if r.tuned_root} == {100, 101}
    assert analysis.search_seeds(str(search_dir)) == {0}
    assert "## digits: tuned re-run" in report_text(tmp_path)


def test_an_older_run_folder_counts_once_with_its_twin(tmp_path):
    """A config.json of an older version: a setting missing, a default given as 0."""
    config = write_run(tmp_path, "new", [6.0], g_loss="hinge")
    write_run(tmp_path, "old", [6.0, 6.5], g_loss="hinge", epochs=2, seed=0)
    saved = json.load(open(tmp_path / "old" / "config.json"))
    saved.pop("latent_dim")
    saved.update(width=0, epochs=1)
    with open(tmp_path / "old" / "config.json", "w") as f:
        json.dump(saved, f)
    runs = analysis.find_runs(str(tmp_path))
    assert len(runs) == 1 and runs[0].dir.endswith("old") and runs[0].duplicates
    assert runs[0].config["width"] == config.width == 16


def test_a_reference_loss_absent_or_misspelt_and_a_d_loss_axis_are_named_plainly(tmp_path):
    for seed in range(3):
        for g_loss, d_loss, score in (("nonsat", "bce", 6.0), ("nonsat", "hinge", 7.0),
                                      ("hinge", "hinge", 6.5)):
            write_run(tmp_path / "both", f"{g_loss}-{d_loss}-{seed}", [score + 0.1 * seed],
                      g_loss=g_loss, d_loss=d_loss, seed=seed)
        write_run(tmp_path / "no-nonsat", f"minimax-{seed}", [5.0 + seed], g_loss="minimax",
                  seed=seed)
        write_run(tmp_path / "no-nonsat", f"hinge-{seed}", [6.0 + seed], g_loss="hinge",
                  seed=seed)
    # Two groups share the generator loss nonsat: sentences name the whole label.
    verdict = section(report_text(tmp_path / "both"), "### Verdict", "###")
    assert "reference: nonsat / bce)" in verdict
    assert "P(nonsat / hinge better) = 1.00" in verdict and "P(hinge better)" in verdict
    assert "from nonsat / bce at this n" in verdict or "than nonsat / bce" in verdict
    assert "nonsat / hinge: about" in verdict
    # No nonsat runs: the stand-in reference is said to be one.
    verdict = section(report_text(tmp_path / "no-nonsat"), "### Verdict", "###")
    assert "reference: minimax / bce: nonsat has no finished runs here, so minimax / bce stands in" \
        in verdict
    with pytest.raises(UsageError, match=r"--reference_loss=nonsta: not a generator loss; "
                       r"one of minimax, nonsat"):
        writer.write_report(str(tmp_path / "no-nonsat"), reference_loss="nonsta")


def test_a_setting_only_some_runs_record_splits_groups_and_lone_groups_are_named(tmp_path):
    for seed in range(2):
        for g_loss in ("nonsat", "hinge"):
            write_run(tmp_path, f"a-{g_loss}-{seed}", [6.0], g_loss=g_loss, seed=seed)
            config = write_run(tmp_path, f"z-{g_loss}-{seed}", [7.0], g_loss=g_loss,
                               seed=seed)
            # A setting from a newer version, which this one does not know.
            path = os.path.join(config.run_dir, "config.json")
            with open(path) as f:
                saved = json.load(f)
            with open(path, "w") as f:
                json.dump(dict(saved, g_ema=0.999), f)
    write_run(tmp_path, "wide-nonsat", [6.0], g_loss="nonsat", width=8)
    text = report_text(tmp_path)
    groups = section(text, "### Groups", "###")
    assert "| nonsat / bce, width=16, g_ema=0.999 | 2 |" in groups  # never seed 0 twice
    assert "| nonsat / bce, width=16, g_ema=None | 2 |" in groups
    verdict = section(text, "### Verdict", "###")
    assert verdict.count("**digits, 1 epoch, width=16, g_ema=") == 2
    assert "Not compared: nonsat / bce, width=8, g_ema=None (no group of another loss" \
        in verdict


def test_a_search_with_one_untied_setting_per_loss_is_reported_and_one_run_has_no_equivalence(
        tmp_path):
    write_search(tmp_path / "search", ["nonsat", "hinge"], 1,
                 lambda c, trial: 6.0 if c.g_loss == "hinge" else 5.0)
    search = section(report_text(tmp_path), "## digits: random search")
    assert "1 distinct setting in all" in search and "tried by 2 losses: 2 runs" in search
    assert ("higher digits score in 1 of 1 settings, lower in 0, tied in 0; p = 1 "
            "(adjusted 1): no difference detected (with 1 untied setting no outcome") in search
    write_run(tmp_path / "few", "nonsat-0", [5.0], g_loss="nonsat")
    for seed in range(3):
        write_run(tmp_path / "few", f"hinge-{seed}", [5.0], g_loss="hinge", seed=seed)
    verdict = section(report_text(tmp_path / "few", equivalence_margin=0.5), "### Verdict",
                      "###")
    assert "equivalence within ±0.5 cannot be shown with a single run on one side" in verdict
