"""A tiny grid through run.py, then the report drawn from it."""
import os

import pytest
import tensorflow as tf

from conftest import run_command
from tfgan_exp import report
from tfgan_exp.config import UsageError


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("grid") / "study"
    args = ["run.py", "--g_loss=minimax,hinge", "--seeds=2", "--epochs=1", "--width=4",
            "--latent_dim=8", "--eval_samples=100", f"--cache_dir={cache_dir}",
            f"--run_dir={root}"]
    result = run_command(*args)
    assert result.returncode == 0, result.stderr
    assert "[grid 4/4]" in result.stderr
    again = run_command(*args)  # a finished grid is skipped, run by run
    assert again.returncode == 0 and again.stderr.count("already trained") == 4
    return str(root)


def test_grid_runs_every_combination_in_named_folders(grid_dir):
    assert sorted(os.listdir(grid_dir)) == [
        "digits-hinge-seed0", "digits-hinge-seed1", "digits-minimax-seed0",
        "digits-minimax-seed1"]


def test_report_has_a_row_per_loss_and_valid_figures(grid_dir):
    path = report.write_report(grid_dir)
    text = open(path).read()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "seeds" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| minimax / bce", "| hinge / hinge"]
    assert all(row.split(" | ")[1] == "2" for row in rows)  # two seeds each
    header = next(line for line in text.splitlines() if line.startswith("| loss"))
    for column in ("final score", "best score", "epoch of best", "final FID", "minutes"):
        assert column in header
    figures = [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".png")]
    assert sorted(figures) == sorted(f"digits_{name}.png" for name in (
        "score", "fid", "g_grad_norm", "d_fake_prob", "losses", "samples"))
    for figure in figures:
        assert f"({figure})" in text
        data = open(os.path.join(os.path.dirname(path), figure), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert tf.io.decode_png(data).shape[0] > 100  # decodes as a real image


def test_report_of_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no run directories"):
        report.write_report(str(tmp_path))
