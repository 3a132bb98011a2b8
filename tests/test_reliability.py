"""Crashes, signals and damaged checkpoints cost at most the work since the last save."""
import glob
import json
import os
import signal
import subprocess
import time

import pytest
import tensorflow as tf

from conftest import command_line, run_command, wait_for
from tfgan_exp.training import trainer
from tfgan_exp.config import Config, UsageError

TIMING = {"seconds", "images_per_sec", "eval_seconds"}  # wall-clock keys, never equal


def command(run_dir, cache_dir):
    return ["run.py", "--deterministic", "--image_size=16", "--epochs=2", "--batch_size=64",
            "--width=4",
            "--latent_dim=8", "--eval_samples=50", "--checkpoint_every_steps=7",
            f"--cache_dir={cache_dir}", f"--run_dir={run_dir}"]


def metrics_without_timing(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    run_dir = str(tmp_path_factory.mktemp("reference") / "run")
    result = run_command(*command(run_dir, cache_dir))
    assert result.returncode == 0, result.stderr
    return metrics_without_timing(run_dir)


def interrupt(run_dir, cache_dir, signum, script="run.py", extra=()):
    """Starts the run, sends ``signum`` once it has completed a checkpoint of its own;
    returns the process and its stderr.

    A checkpoint is complete once TensorFlow's ``checkpoint`` state file names it; a
    resumed run's first checkpoint is the first that changes the file.
    """
    state_file = os.path.join(run_dir, "checkpoints", "checkpoint")
    before = open(state_file).read() if os.path.exists(state_file) else None
    args = [script, *command(run_dir, cache_dir)[1:], *extra]
    process = subprocess.Popen(command_line(*args), cwd=os.path.dirname(run_dir),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(state_file) and open(state_file).read() not in (
        before, ""), "a checkpoint of its own", 240, 0.01, process=process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process, stderr


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, cache_dir,
                                                                  reference):
    # Stopped by Ctrl-C (the step finishes, saves, exits non-zero and says how to go on),
    # then killed outright after a later checkpoint (as the out-of-memory killer does),
    # then resumed to the end; all at 5 steps per call, so that saves, the signals and
    # the resumes land between calls and a resumed epoch's steps are not a multiple of 5.
    run_dir = str(tmp_path / "run")
    extra = ["--steps_per_execution=5"]
    process, stderr = interrupt(run_dir, cache_dir, signal.SIGINT, extra=extra)
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "stopped by SIGINT after step" in stderr and "Run the same command" in stderr
    assert "Traceback" not in stderr
    process, stderr = interrupt(run_dir, cache_dir, signal.SIGKILL, extra=extra)
    assert process.returncode == -signal.SIGKILL and "resuming" in stderr, stderr[-3000:]
    resumed = run_command(*command(run_dir, cache_dir), *extra)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert metrics_without_timing(run_dir) == reference  # to the last bit, every epoch once


@pytest.mark.slow
def test_two_replicas_resume_mid_epoch_with_the_running_means_put_back(tmp_path, cache_dir):
    # The epoch's running means live in SUM-aggregated per-replica variables under a
    # MirroredStrategy; a resume must split them back so the epoch's means come out whole.
    script = os.path.join("tests", "two_replica_run.py")
    reference_dir = str(tmp_path / "reference")
    reference = run_command(script, *command(reference_dir, cache_dir)[1:])
    assert reference.returncode == 0, reference.stderr
    assert "on 2 replica(s)" in reference.stderr
    run_dir = str(tmp_path / "run")
    process, stderr = interrupt(run_dir, cache_dir, signal.SIGTERM, script)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    resumed = run_command(script, *command(run_dir, cache_dir)[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "step 0 of" not in resumed.stderr
    resumed_records, reference_records = (metrics_without_timing(run_dir),
                                          metrics_without_timing(reference_dir))
    assert [r["epoch"] for r in resumed_records] == [1, 2]
    # The weights come out bit for bit: later epochs are identical. The interrupted
    # epoch's means are summed in another order (the checkpoint keeps their total, not
    # each replica's share), so they agree to float32 rounding, not to the bit.
    assert resumed_records[1:] == reference_records[1:]
    assert resumed_records[0] == pytest.approx(reference_records[0], rel=1e-6)


@pytest.mark.slow
def test_a_truncated_checkpoint_falls_back_to_the_one_before(tmp_path, cache_dir, capsys):
    run_dir = str(tmp_path / "run")
    config = dict(dataset="digits", image_size=16, width=4, latent_dim=8, batch_size=64,
                  eval_every=0, checkpoint_every_steps=10, cache_dir=cache_dir, run_dir=run_dir)
    trainer.run(Config(epochs=1, **config))
    checkpoints = os.path.join(run_dir, "checkpoints")
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-28")
    data_file = glob.glob(os.path.join(checkpoints, "ckpt-28.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    trainer.run(Config(epochs=2, **config))
    err = capsys.readouterr().err
    assert "checkpoint" in err and "ckpt-28 cannot be restored" in err
    assert "falling back to" in err and "ckpt-20" in err
    assert "resuming" in err and "at step 20" in err
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]


@pytest.mark.slow
def test_no_readable_checkpoint_stops_instead_of_starting_over(tmp_path, cache_dir):
    run_dir = str(tmp_path / "run")
    config = dict(dataset="digits", image_size=16, width=4, latent_dim=8, batch_size=64,
                  eval_every=0, cache_dir=cache_dir, run_dir=run_dir)
    trainer.run(Config(epochs=1, **config))
    for data_file in glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.data-*")):
        with open(data_file, "wb") as f:
            f.write(b"not a checkpoint")
    with pytest.raises(UsageError, match="no checkpoint .* can be restored.*--overwrite"):
        trainer.run(Config(epochs=2, **config))


@pytest.mark.slow
def test_report_command_rejects_a_missing_directory(tmp_path):
    result = run_command("-m", "tfgan_exp.report", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_batch_that_does_not_split_across_replicas_is_refused(tmp_path, cache_dir,
                                                                  mirrored, monkeypatch):
    # Two replicas from the two logical CPUs, standing in for two GPUs.
    monkeypatch.setattr(trainer.distribute, "make_strategy", lambda name, tpu="": mirrored)
    run_dir = str(tmp_path / "run")
    with pytest.raises(UsageError, match=r"--batch_size=63 does not split across the 2 "
                       r"replicas.*choose --batch_size=62 or --batch_size=64.*"
                       r"--strategy=default"):
        trainer.run(Config(dataset="digits", batch_size=63, cache_dir=cache_dir,
                            run_dir=run_dir, strategy="mirrored"))
    assert not os.path.exists(run_dir)


def sigterm_once(args, cwd, ready, timeout=300):
    """Starts ``python ARGS``, sends SIGTERM once ``ready()`` holds; returns the process,
    its stderr and the seconds from the signal to its exit."""
    process = subprocess.Popen(command_line(*args), cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for(ready, "the moment to stop it", timeout, 0.01, process=process)
    process.send_signal(signal.SIGTERM)
    sent = time.time()
    _, stderr = process.communicate(timeout=120)
    return process, stderr, time.time() - sent


@pytest.mark.slow
def test_sigterm_during_an_evaluation_stops_at_once_and_the_resume_evaluates_it(
        tmp_path, cache_dir):
    # 20,000 images make the evaluation 20 chunks (about 2 s on a 2-core CPU), far
    # longer than a signal takes to arrive. The epoch's checkpoint is written before it
    # starts: the signal is sent the moment it appears.
    def args(run_dir):
        return ["run.py", "--deterministic", "--image_size=16", "--epochs=1",
                "--width=4", "--latent_dim=8", "--eval_every=1", "--eval_samples=20000",
                f"--cache_dir={cache_dir}", f"--run_dir={run_dir}"]

    run_dir = tmp_path / "run"
    process, stderr, _ = sigterm_once(
        args(run_dir), tmp_path, lambda: (run_dir / "checkpoints" / "checkpoint").exists())
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "evaluation of epoch 1 abandoned" in stderr
    assert "stopped by SIGTERM during the evaluation of epoch 1" in stderr
    assert "Traceback" not in stderr
    # No metrics line: the evaluation was abandoned, not finished.
    assert not (run_dir / "metrics.jsonl").exists()  # the epoch waits for its evaluation
    assert json.loads((run_dir / "pending_epoch.json").read_text())["epoch"] == 1
    resumed = run_command(*args(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "evaluating epoch 1" in resumed.stderr and "training nonsat" not in resumed.stderr
    assert not (run_dir / "pending_epoch.json").exists()
    reference = run_command(*args(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert metrics_without_timing(run_dir) == metrics_without_timing(tmp_path / "reference")


@pytest.mark.slow
def test_sigterm_during_start_up_stops_within_seconds_and_leaves_nothing(tmp_path):
    # A new cache: the digits classifier is being trained (tens of seconds) when the
    # signal comes; the run has taken its folder's lease, nothing else yet.
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = ["run.py", "--epochs=1", "--image_size=16", "--width=4", "--latent_dim=8",
            f"--cache_dir={cache}", f"--run_dir={run_dir}"]
    process, stderr, _ = sigterm_once(
        args, tmp_path, lambda: (run_dir / "lease.json").exists())
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped: stopped by SIGTERM before training started" in stderr
    assert "Traceback" not in stderr
    assert not run_dir.exists()  # created for the lease only: removed again
    cached = os.listdir(cache) if cache.exists() else []
    assert [name for name in cached if ".tmp" in name] == []  # nothing half-written
    # It stopped without waiting for the classifier's training to end (a stop that
    # waited would have cached its weights).
    assert [name for name in cached if name.endswith(".weights.h5")] == []


@pytest.mark.slow
def test_a_missing_checkpoint_state_file_resumes_from_the_newest_checkpoint(tmp_path,
                                                                             cache_dir,
                                                                             capsys):
    from tfgan_exp.grids import launch
    run_dir = str(tmp_path / "run")
    config = dict(dataset="digits", image_size=16, width=4, latent_dim=8, batch_size=64,
                  eval_every=0, checkpoint_every_steps=10, cache_dir=cache_dir,
                  strategy="default", run_dir=run_dir)
    trainer.run(Config(epochs=1, **config))
    os.remove(os.path.join(run_dir, "checkpoints", "checkpoint"))  # lost: ckpt-* remain
    assert launch.already_trained(Config(epochs=1, **config).resolved())
    trainer.run(Config(epochs=2, **config))
    err = capsys.readouterr().err
    assert "resuming" in err and "at step 28" in err
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]
    # The state file is written again, listing them: they are kept and deleted as usual.
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")).endswith("ckpt-56")


@pytest.mark.slow
def test_overwrite_happens_once_per_invocation_token(tmp_path, cache_dir, monkeypatch,
                                                      capsys):
    run_dir = str(tmp_path / "run")
    config = dict(dataset="digits", image_size=16, width=4, latent_dim=8, batch_size=64,
                  eval_every=0, cache_dir=cache_dir, strategy="default", run_dir=run_dir,
                  overwrite=True)
    monkeypatch.setenv("TFGAN_EXP_INVOCATION", "77_4")  # a Slurm task ...
    trainer.run(Config(epochs=1, **config))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        first_line = f.readline()
    capsys.readouterr()
    trainer.run(Config(epochs=2, **config))  # ... requeued: the same command again
    assert "resuming" in capsys.readouterr().err
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = f.readlines()
    assert lines[0] == first_line and len(lines) == 2  # the first attempt's epoch kept
    monkeypatch.setenv("TFGAN_EXP_INVOCATION", "78_4")  # a new submission overwrites
    trainer.run(Config(epochs=1, **config))
    assert "resuming" not in capsys.readouterr().err
    assert [r["epoch"] for r in metrics_without_timing(run_dir)] == [1]  # afresh
    assert os.path.exists(os.path.join(run_dir, "lease.lock"))
