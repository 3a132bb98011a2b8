"""End to end in-process: a tiny run writes the run directory and resumes it."""
import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import made_once
from tfgan_exp.gan import losses
from tfgan_exp.training import trainer
from tfgan_exp.config import Config, UsageError
from tfgan_exp.gan.model import METRIC_NAMES

TINY = dict(dataset="digits", image_size=16, width=4, latent_dim=8, batch_size=64,
            strategy="default", eval_every=1, eval_samples=100)


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(cache_dir):
    TINY["cache_dir"] = cache_dir  # never the user's ~/.cache


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, worker_id, cache_dir):
    """A tiny 2-epoch run the tests read (or copy): (run folder, Config, last record)."""
    settings = dict(TINY, epochs=2, cache_dir=cache_dir)

    def train(folder):
        last = trainer.run(Config(run_dir=str(folder / "digits"), **settings))
        (folder / "last.json").write_text(json.dumps(last))

    folder = made_once(tmp_path_factory, worker_id, "finished-run", train)
    config = Config(run_dir=str(folder / "digits"), **settings)
    return config.run_dir, config, json.loads((folder / "last.json").read_text())


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_run_writes_the_run_directory(finished_run):
    run_dir, config, last = finished_run
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert saved == json.loads(config.resolved().to_json())
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2] and records[-1] == last
    for key in ("epoch", "step", "seconds", "images_per_sec", "digits_score",
                "digits_score_mean_10", "digits_score_std", "digits_fid",
                "eval_seconds") + METRIC_NAMES:
        assert key in records[0]
        assert np.isfinite(records[0][key])
    assert records[1]["step"] == 2 * (1797 // 64)
    assert 0 < records[0]["d_fake_prob"] < 1 and records[0]["g_grad_norm"] > 0
    samples = sorted(os.listdir(os.path.join(run_dir, "samples")))
    assert samples == ["epoch_0001.png", "epoch_0002.png"]
    grid = tf.io.decode_png(tf.io.read_file(os.path.join(run_dir, "samples", samples[0])))
    assert grid.shape == (8 * 16, 8 * 16, 1)
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    assert latest.endswith(f"ckpt-{2 * 28}")  # named by global step
    assert records[0]["digits_classes"] in range(11)


def test_the_run_records_its_reference_and_what_made_it(finished_run):
    run_dir = finished_run[0]
    reference = json.load(open(os.path.join(run_dir, "reference.json")))
    # 100 generated images; the distances compare them with as many real ones, and the
    # anchor scores 100 other real images against those.
    assert (reference["num_generated"], reference["num_compared"],
            reference["num_reference"]) == (100, 100, 100)
    assert reference["anchor"]["digits_classes"] == 10
    attempts = json.load(open(os.path.join(run_dir, "provenance.json")))["attempts"]
    assert len(attempts) == 1
    attempt = attempts[0]
    assert attempt["outcome"] == "finished" and attempt["first_step"] == 0
    assert attempt["last_step"] == 2 * 28 and attempt["ended"] >= attempt["started"]
    assert attempt["tensorflow"] == tf.__version__ and attempt["devices"] == ["CPU"]
    assert attempt["code"]["version"] and attempt["host"] and attempt["cpu"]
    assert attempt["strategy"] == "default" and attempt["replicas"] == 1


def tensorboard_points(run_dir):
    """{tag: [steps, in file order]} over the run's event files, and its hparams."""
    from tensorboard.plugins.hparams import metadata as hparams_metadata
    points, hparams = {}, []
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    hparams.append(hparams_metadata.parse_session_start_info_plugin_data(
                        value.metadata.plugin_data.content).hparams)
                else:
                    points.setdefault(value.tag, []).append(event.step)
    return points, hparams


def test_tensorboard_has_sections_sample_grids_and_hparams(finished_run):
    points, hparams = tensorboard_points(finished_run[0])
    for tag in ("losses/d_loss", "losses/g_loss", "diagnostics/g_grad_norm",
                "diagnostics/d_fake_prob", "speed/images_per_sec", "samples",
                "evaluation/digits_score", "evaluation/digits_fid", "evaluation/digits_kid",
                "evaluation/digits_precision", "evaluation/digits_recall"):
        assert points.get(tag) == [1, 2], tag
    assert len(hparams) == 1  # the HParams dashboard's row for this run
    assert hparams[0]["g_loss"].string_value == "nonsat"
    assert hparams[0]["lr_g"].number_value == pytest.approx(2e-4)
    assert "run_dir" not in hparams[0] and "cache_dir" not in hparams[0]


@pytest.mark.slow
def test_a_resume_from_an_older_checkpoint_leaves_one_point_per_epoch(tmp_path):
    run_dir = str(tmp_path / "run")
    config = dict(TINY, eval_every=0, run_dir=run_dir)
    trainer.run(Config(epochs=2, **config))
    # The newest checkpoint is damaged: the run falls back to epoch 1's and trains
    # epoch 2 again, which TensorBoard already holds.
    data_file = glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-56.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    trainer.run(Config(epochs=3, **config))
    points, hparams = tensorboard_points(run_dir)
    assert len(hparams) == 1  # written at step 0 only, not again on the resume
    assert points["losses/d_loss"] == [1, 2, 3] and points["samples"] == [1, 2, 3]


@pytest.mark.slow
def test_same_command_resumes_where_it_stopped(finished_run, tmp_path, capsys):
    # A copy: the shared finished run stays two epochs long for the other tests.
    run_dir = str(tmp_path / "digits")
    shutil.copytree(finished_run[0], run_dir)
    before = read_metrics(run_dir)
    trainer.run(Config(epochs=3, run_dir=run_dir, **TINY))
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[:2] == before  # the finished epochs are kept, not redone
    assert "resuming" in capsys.readouterr().err
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
    iterations = reader.get_tensor("g_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    assert iterations == 3 * (1797 // 64)  # optimizer state continued, not restarted
    attempts = json.load(open(os.path.join(run_dir, "provenance.json")))["attempts"]
    assert [(a["first_step"], a["last_step"]) for a in attempts] == [(0, 56), (56, 84)]
    # Asking for fewer epochs than done trains nothing and keeps everything.
    assert trainer.run(Config(epochs=3, run_dir=run_dir, **TINY))["epoch"] == 3


def test_a_directory_with_other_settings_is_refused(finished_run, tmp_path):
    run_dir = str(tmp_path / "digits")  # a copy: other workers read the shared one
    shutil.copytree(finished_run[0], run_dir)
    with pytest.raises(UsageError, match="g_loss: 'nonsat' there, 'hinge' now.*--overwrite"):
        trainer.run(Config(epochs=3, run_dir=run_dir, g_loss="hinge", **TINY))
    assert [r["epoch"] for r in read_metrics(run_dir)][:2] == [1, 2]


def test_nothing_is_written_for_a_run_that_cannot_start(tmp_path):
    run_dir = str(tmp_path / "never")
    with pytest.raises(UsageError, match="images per step"):
        trainer.run(Config(epochs=1, run_dir=run_dir, **dict(TINY, batch_size=4096)))
    assert not os.path.exists(run_dir)


@pytest.mark.slow
def test_cifar10_run_scores_with_inception_every_eval_every_epochs_and_last(
        tmp_path, fake_inception_dir, cache_dir, online):
    run_dir = str(tmp_path / "cifar")
    with tfds.testing.mock_data(num_examples=64, data_dir=str(tmp_path / "tfds")):
        trainer.run(Config(dataset="cifar10", data_dir=str(tmp_path / "tfds"), epochs=3,
                            eval_every=2, width=2, latent_dim=8, batch_size=16,
                            eval_samples=20, inception_model=fake_inception_dir,
                            cache_dir=cache_dir, run_dir=run_dir, strategy="default"))
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [("fid" in r) for r in records] == [False, True, True]  # epoch 2, and the last
    for record in records[1:]:
        assert 1.0 <= record["inception_score"] <= 1008
        assert record["fid"] > 0 and record["eval_seconds"] > 0
        assert "inception_score_std" in record and "inception_score_mean_10" in record
    assert glob.glob(os.path.join(cache_dir, "features-inception-cifar10-32px-20-*.npz"))


def test_unloadable_inception_stops_before_anything_is_written(tmp_path, cache_dir, online):
    run_dir = str(tmp_path / "never")
    with tfds.testing.mock_data(num_examples=64, data_dir=str(tmp_path / "tfds")):
        with pytest.raises(UsageError, match="no SavedModel there"):
            trainer.run(Config(dataset="cifar10", data_dir=str(tmp_path / "tfds"),
                                inception_model=str(tmp_path / "missing"),
                                cache_dir=cache_dir, run_dir=run_dir, batch_size=16))
    assert not os.path.exists(run_dir)


@pytest.mark.slow
def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "nan")
    config = dict(TINY, eval_every=0, run_dir=run_dir)
    trainer.run(Config(epochs=1, **config))
    # Inject the fault into the loss (not into the guard under test): from now on the
    # generator loss is NaN, so the resumed run diverges at its first step.
    monkeypatch.setitem(losses.G_LOSSES, "nonsat", lambda f: f * float("nan"))
    with pytest.raises(trainer.TrainingDiverged,
                       match=r"epoch 2, step 29: .*g_loss = nan.*ckpt-28"):
        trainer.run(Config(epochs=3, **config))
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1]
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    assert latest.endswith("ckpt-28")  # the good state, neither overwritten nor deleted
    assert sorted(os.listdir(os.path.join(run_dir, "samples"))) == ["epoch_0001.png"]


@pytest.mark.slow
def test_a_nan_after_a_mid_epoch_resume_names_its_global_step(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "nan")
    config = dict(TINY, eval_every=0, checkpoint_every_steps=10, run_dir=run_dir)
    trainer.run(Config(epochs=1, **config))
    # Damage the epoch-end checkpoint: the next run resumes at step 20 of epoch 1's 28.
    checkpoints = os.path.join(run_dir, "checkpoints")
    data_file = glob.glob(os.path.join(checkpoints, "ckpt-28.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    monkeypatch.setitem(losses.G_LOSSES, "nonsat", lambda f: f * float("nan"))
    with pytest.raises(trainer.TrainingDiverged, match=r"epoch 1, step 21: .*g_loss = nan"):
        trainer.run(Config(epochs=2, **config))
