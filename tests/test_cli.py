"""run.py as a user types it: bad input gets a message, good input trains."""
import glob
import json
import os

import pytest

from conftest import run_command

BAD_FLAGS = [
    (["--dataset=mnist"], "--dataset=mnist: unknown; choose one of digits, cifar10, stl10"),
    (["--g_loss=maxlogd"], "--g_loss=maxlogd: unknown; choose one of minimax, nonsat"),
    (["--batch_size=0"], "--batch_size=0: must be an integer from 1"),
    (["--image_size=30"], "--image_size=30: must be a multiple of 8"),
    (["--lr_d=-1"], "--lr_d=-1.0: must be a number in (0.0, 1.0]"),
    (["--epochs=ten"], "--epochs"),
    (["--no_such_flag=1"], "no_such_flag"),
    (["stl10"], "unexpected argument(s) ['stl10']"),
    (["--strategy=multiworker"], "needs the cluster in TF_CONFIG"),
    (["--run_dir=/etc/hostname/run"], "/etc/hostname is not a writable directory"),
    (["--lr_g=1e-4,,2e-4"], "--lr_g=1e-4,,2e-4: '1e-4,,2e-4' has an empty item"),
    (["--spectral_norm=maybe"], "'maybe' is not true or false"),
    (["--g_loss=minimax,hinge", "--shard=3/2"], "--shard=3/2: the shard index must be 0..N-1"),
    (["--g_loss=minimax,hinge", "--parallel=0"], "--parallel=0: must be an integer from 1"),
    (["--shard=0/2"], "there is only one run; --shard splits a grid"),
    (["--search=2", "--lr_d=1e-4,2e-4"], "--search=2 draws lr_g, lr_d"),
    (["--search=2", "--d_steps=5"], "do not also give --d_steps"),
    (["--search=2", "--preset=wgan_gp_paper"], "do not also give --preset=wgan_gp_paper"),
    (["--g_loss=minimax,hinge", "--lr_d=2"], "--lr_d=2.0: must be a number in (0.0, 1.0]"),
    (["--g_loss=minimax,hinge", "--parallel=2", "--strategy=tpu", "--tpu=local"],
     "runs cannot share the machine"),
]


@pytest.mark.parametrize("args, message", BAD_FLAGS)
@pytest.mark.slow
def test_bad_input_is_one_line_and_status_2(args, message, tmp_path):
    result = run_command("run.py", *args, f"--data_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr and "FATAL" not in result.stderr
    # Anything more (the settings that clash, how to get missing data) follows, indented.
    assert all(line.startswith("  ") for line in lines[errors[0] + 1:]), result.stderr
    assert os.listdir(tmp_path) == []  # nothing written: no runs/, no cache


def test_help_states_units_and_bounds():
    result = run_command("run.py", "--help")
    assert result.returncode == 0
    for text in ("--batch_size", "Global batch in images", "multiple of 8", "--g_loss",
                 "minimax, nonsat, hinge, wgan-gp, lsgan"):
        assert text in result.stdout, text


@pytest.mark.slow
def test_bench_prints_its_json_last(tmp_path):
    result = run_command("-m", "tfgan_exp.bench", "--width=4", "--batch_size=8", "--steps=2",
                         "--rounds=2", "--warmup=1", "--eval_images=4", "--input_steps=5",
                         f"--profile_dir={tmp_path / 'trace'}", "--profile_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("train_images_per_sec", "train_step_ms", "eval_images_per_sec",
                "peak_memory_mb", "plain_tf_step_ms", "speed_vs_plain_tf",
                "input_images_per_sec", "ours_fit_step_ms", "fit_over_train_function",
                "fit_speed_vs_plain_tf"):
        assert record[key] > 0, key
    rounds = record["round_step_ms"]
    assert len(rounds["ours"]) == len(rounds["ours_fit"]) == len(rounds["plain_tf"]) == 2
    # Evaluation sizing: Inception-v3 with the resize is about 11.5 GFLOP per image.
    assert 11.0 < record["flops"]["eval_gflop_per_image"] < 12.0
    assert record["flops"]["train_gflop_per_image"] > 0
    estimate = record["estimated_run"]
    assert estimate["eval_every"] == 8 and estimate["evaluations"] == 38  # 8, 16, ..., 296, 300
    assert estimate["eval_every_for_10_percent"] * 0.1 >= estimate["eval_share"]
    flops = record["flops"]
    assert flops["run_pflop"] == pytest.approx(
        (300 * 50_000 * flops["train_gflop_per_image"]
         + 38 * 10_000 * flops["eval_gflop_per_image"]) / 1e6)
    # The profile: a table of both implementations' kernels, and traces TensorBoard reads.
    assert "kernels per step" in result.stdout and "plain_tf ms" in result.stdout
    assert "Conv2D" in result.stdout
    for name in ("ours", "plain_tf"):
        assert glob.glob(str(tmp_path / "trace" / name / "plugins" / "profile" / "*" /
                             "*.xplane.pb")), name
    estimate = record["estimated_run"]
    assert estimate["total_hours"] == pytest.approx(
        estimate["train_hours"] + estimate["eval_hours"])
    assert estimate["train_hours"] == pytest.approx(
        50_000 // 8 * 300 * record["train_step_ms"] / 1000 / 3600)


def test_seeds_beside_a_seed_says_which_seeds_train(tmp_path):
    result = run_command("run.py", "--seeds=2", "--seed=7", "--dry_run",
                         f"--run_dir={tmp_path / 'grid'}")
    assert result.returncode == 0, result.stderr
    assert "note: --seeds=2 overrides --seed=7: seeds 0..1 train" in result.stderr
    assert result.stdout.count("would train") == 2
