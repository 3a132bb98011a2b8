"""Strategy choice, and two worker processes training together over loopback."""
import glob
import json
import os
import random
import re
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import classifier_only_cache, command_line
from tfgan_exp import data
from tfgan_exp.runtime import distribute
from tfgan_exp.evaluation import evaluator
from tfgan_exp.evaluation.classifiers import DigitsClassifier
from tfgan_exp.config import Config, UsageError
from tfgan_exp.rundir import RunDir
from tfgan_exp.training import trainer


def test_auto_picks_tpu_when_configured_else_default_on_cpu(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert distribute.resolve_name("auto") == "default"  # no GPU here
    assert distribute.resolve_name("auto", tpu="local") == "tpu"
    monkeypatch.setenv("TPU_NAME", "my-tpu")
    assert distribute.resolve_name("auto") == "tpu"
    assert distribute.resolve_name("mirrored") == "mirrored"


def test_multiworker_needs_a_valid_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="needs the cluster in TF_CONFIG"):
        distribute.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UsageError, match="TF_CONFIG is not valid JSON"):
        distribute.make_strategy("multiworker")


def test_an_nvidia_gpu_that_tensorflow_cannot_see_is_reported_with_the_fix(tmp_path):
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    dev.mkdir()
    (dev / "nvidiactl").touch()  # the driver's control device alone is no GPU
    assert not distribute.nvidia_gpus_present(str(dev), str(proc))
    (dev / "nvidia0").touch()
    assert distribute.nvidia_gpus_present(str(dev), str(proc))
    note = distribute.unused_gpu_note(tensorflow_gpus=0, present=True)
    assert note.count("\n") == 0 and "requirements-gpu.txt" in note and "GPU=1" in note
    assert distribute.unused_gpu_note(tensorflow_gpus=1, present=True) == ""
    assert distribute.unused_gpu_note(tensorflow_gpus=0, present=False) == ""


def free_ports(count):
    """``count`` distinct free loopback ports for a cluster's workers, which bind them
    seconds later. They come from a range of this pytest worker's own (gw0: 20000-20999,
    gw1: 21000-...), below the ports the system hands out for port 0, so that neither
    another test nor another process takes one meanwhile."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    first = 20000 + 1000 * (worker % 12)
    ports = []
    for port in random.sample(range(first, first + 1000), 1000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"no {count} free ports in {first}..{first + 999}")


def start_workers(tmp_path, cache_dir, *args, env=None):
    """Two run.py processes joined over loopback, given the same --run_dir (tmp_path/run)
    and ``cache_dir`` (or each its own, given a pair)."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    cache_dirs = [cache_dir] * 2 if isinstance(cache_dir, (str, os.PathLike)) else cache_dir
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        worker_env = dict(os.environ, **(env or {}), TF_CONFIG=json.dumps(tf_config))
        processes.append(subprocess.Popen(
            command_line("run.py", "--strategy=multiworker", "--image_size=16",
                         "--width=4", "--latent_dim=8", f"--cache_dir={cache_dirs[index]}",
                         f"--run_dir={tmp_path / 'run'}", *args),
            cwd=tmp_path, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


class FakeMetadataServer:
    """Answers every GET as Google Cloud's metadata server does: TensorFlow's platform
    detection (GCE_METADATA_IP) then takes this machine for a GCE VM."""

    def __enter__(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Metadata-Flavor", "Google")
                self.end_headers()
                self.wfile.write(b"instance")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()


def checkpoint_state(run_dir):
    """The text of TensorFlow's checkpoint state file in ``run_dir`` (None: none yet)."""
    state_file = run_dir / "checkpoints" / "checkpoint"
    return state_file.read_text() if state_file.exists() else None


def wait_for_checkpoint(processes, run_dir, before, timeout=300):
    """Returns once the chief has completed a checkpoint (training is under way): once
    TensorFlow's state file reads other than ``before`` (``checkpoint_state``, read
    before ``processes`` started)."""
    state_file = run_dir / "checkpoints" / "checkpoint"
    deadline = time.time() + timeout
    while not state_file.exists() or state_file.read_text() in (before, ""):
        assert all(p.poll() is None for p in processes) and time.time() < deadline, (
            ended(processes))
        time.sleep(0.05)


def finish(processes, timeout=400):
    """[(exit status, stderr)] of ``processes`` once they end; any still running after
    ``timeout`` seconds (a worker waiting for one that is gone) is killed first, so
    that a failing test leaves no worker behind."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        outputs = [p.communicate() for p in processes]
    return [(p.returncode, err) for p, (_, err) in zip(processes, outputs)]


def ended(processes):
    """What a failed wait shows: every worker's status and stderr, the others killed."""
    return finish(processes, timeout=5)


@pytest.mark.slow
def test_two_workers_stop_together_in_start_up_and_at_one_step_and_fall_back_together(
        tmp_path, monkeypatch):
    """One cluster's life on a GCE VM, where TensorFlow's own preemption handler would
    ignore SIGTERM. A preemption notice to one worker during start-up stops both before
    anything is written; ``--overwrite`` then starts both afresh (the chief deletes the
    old run while the other starts); a notice to one worker stops both at one step; with
    that checkpoint damaged, both fall back past it together, compute the real images'
    features together, and end with the same weights."""
    cache_dir = str(tmp_path / "cache")  # empty: start-up trains the digits classifier
    run_dir = tmp_path / "run"
    trainer.run(Config(dataset="digits", image_size=16, width=4, latent_dim=8, epochs=1,
                       eval_every=0, strategy="default", cache_dir=cache_dir,
                       run_dir=str(run_dir)))  # the run to overwrite
    args = ["--epochs=1", "--eval_samples=50", "--checkpoint_every_steps=5"]
    with FakeMetadataServer() as metadata_ip:
        env = {"GCE_METADATA_IP": metadata_ip}
        monkeypatch.setenv("GCE_METADATA_IP", metadata_ip)
        from tensorflow.python.distribute.failure_handling import failure_handling_util
        assert failure_handling_util.detect_platform() == (
            failure_handling_util.PlatformDevice.GCE_CPU)  # what TF's handler ignores
        processes = start_workers(tmp_path, cache_dir, *args, "--overwrite", env=env)
        # Once the chief trains the classifier (its lock file appears) the other worker
        # is past every step of its start-up that TensorFlow's own SIGTERM handler
        # could take the signal in (see distribute.make_strategy).
        while not glob.glob(os.path.join(cache_dir, "digits_classifier_*.lock")):
            assert all(p.poll() is None for p in processes), ended(processes)
            time.sleep(0.01)
        processes[1].send_signal(signal.SIGTERM)  # a preemption notice during start-up
        for status, err in finish(processes, timeout=300):
            assert status == 128 + signal.SIGTERM, err[-3000:]
            assert "before training started" in err, err[-3000:]
        assert [r["epoch"] for r in RunDir(str(run_dir)).read_metrics()] == [1]  # untouched
        # The chief's cache now holds the real images' features, the other worker's
        # only the same classifier. Both must compute them together (it takes
        # collectives) or neither: a worker alone would wait for the other forever.
        classifier = DigitsClassifier(cache_dir)
        evaluator.real_features(classifier, data.load_images("digits", 16), "digits-16px",
                                cache_dir, 50, held_out=True)  # as training computes them
        cached = glob.glob(os.path.join(cache_dir, "features-digits-digits-16px-50-*.npz"))
        assert len(cached) == 1
        written = os.path.getmtime(cached[0])
        own_cache = classifier_only_cache(cache_dir, tmp_path / "own-cache")
        before = checkpoint_state(run_dir)  # the old run's
        processes = start_workers(tmp_path, cache_dir, *args, "--overwrite", env=env)
        wait_for_checkpoint(processes, run_dir, before)
        processes[1].send_signal(signal.SIGTERM)  # a preemption notice to one worker only
        steps = []
        for status, err in finish(processes, timeout=300):
            assert status == 128 + signal.SIGTERM, err[-3000:]
            assert "resuming" not in err  # both started afresh, at step 0
            steps.append(int(re.search(r"stopped by SIGTERM after step (\d+)", err).group(1)))
        assert steps[0] == steps[1]  # both saved at the step they agreed on
        assert not (run_dir / "metrics.jsonl").exists()  # the old run's epoch is gone
        checkpoints = run_dir / "checkpoints"
        assert tf.train.latest_checkpoint(str(checkpoints)).endswith(f"ckpt-{steps[0]}")
        # Damage the newest: both workers must fall back past it, to the same one.
        data_file = next(checkpoints.glob(f"ckpt-{steps[0]}.data-*"))
        data_file.write_bytes(data_file.read_bytes()[:data_file.stat().st_size // 2])
        resume_at = max(int(p.name.split("-")[1].split(".")[0])
                        for p in checkpoints.glob("ckpt-*.index") if p.name != (
                            f"ckpt-{steps[0]}.index"))
        outcomes = finish(start_workers(tmp_path, [cache_dir, str(own_cache)], *args, env=env))
    for status, err in outcomes:
        assert status == 0, err[-3000:]
        assert f"resuming {run_dir} at step {resume_at}" in err
        assert f"ckpt-{steps[0]} cannot be restored" in err
    # The chief found the features (its file is the one written above), the other worker
    # computed them under the same key, both together.
    assert os.path.getmtime(cached[0]) == written
    assert os.listdir(own_cache) and os.path.basename(cached[0]) in os.listdir(own_cache)
    assert "on 2 replica(s)" in outcomes[0][1] and "non-chief worker" not in outcomes[0][1]
    records = RunDir(str(run_dir)).read_metrics()
    assert [r["epoch"] for r in records] == [1] and "digits_fid" in records[-1]
    # Only the chief (worker 0) writes the run directory; the other keeps its
    # checkpoints elsewhere, and both end with the same weights, bit for bit.
    other_checkpoints = re.search(r"non-chief worker: checkpoints in (\S+)",
                                  outcomes[1][1]).group(1)
    assert not other_checkpoints.startswith(str(run_dir))
    chief = tf.train.load_checkpoint(str(checkpoints))
    other = tf.train.load_checkpoint(other_checkpoints)
    names = [n for n in chief.get_variable_to_shape_map() if n.startswith(("generator/",
                                                                           "discriminator/"))]
    assert len(names) > 10
    for name in names:
        np.testing.assert_array_equal(chief.get_tensor(name), other.get_tensor(name), name)
