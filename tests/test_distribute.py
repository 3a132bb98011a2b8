"""Strategy choice, and two worker processes training together over loopback."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from tfgan_exp import distribute
from tfgan_exp.config import UsageError


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


def free_ports(count):
    """``count`` distinct free loopback ports (all held open while choosing, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_workers(tmp_path, cache_dir, *args):
    """Two run.py processes joined over loopback, given the same --run_dir (tmp_path/run)."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config))
        processes.append(subprocess.Popen(
            [sys.executable, "run.py", "--strategy=multiworker", "--image_size=16",
             "--width=4", "--latent_dim=8", f"--cache_dir={cache_dir}",
             f"--run_dir={tmp_path / 'run'}", *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


def test_two_workers_train_together_and_end_with_the_same_weights(tmp_path, cache_dir):
    processes = start_workers(tmp_path, cache_dir, "--epochs=2", "--eval_samples=50")
    outputs = [p.communicate(timeout=400) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    assert "on 2 replica(s)" in outputs[0][1]
    # Only the chief (worker 0) writes the run directory; the other keeps its
    # checkpoints elsewhere.
    chief_dir = tmp_path / "run"
    assert [json.loads(line)["epoch"] for line in open(chief_dir / "metrics.jsonl")] == [1, 2]
    assert "non-chief worker" not in outputs[0][1]
    other_checkpoints = re.search(r"non-chief worker: checkpoints in (\S+)",
                                  outputs[1][1]).group(1)
    assert not other_checkpoints.startswith(str(chief_dir))
    # Every worker ends with the same weights.
    chief = tf.train.load_checkpoint(str(chief_dir / "checkpoints"))
    other = tf.train.load_checkpoint(other_checkpoints)
    names = [n for n in chief.get_variable_to_shape_map() if n.startswith(("generator/",
                                                                           "discriminator/"))]
    assert len(names) > 10
    for name in names:
        np.testing.assert_array_equal(chief.get_tensor(name), other.get_tensor(name), name)


def test_sigterm_to_one_worker_stops_all_at_one_step_and_resumes(tmp_path, cache_dir):
    args = ["--epochs=3", "--batch_size=16", "--eval_every=0"]
    processes = start_workers(tmp_path, cache_dir, *args)
    state_file = tmp_path / "run" / "checkpoints" / "checkpoint"
    deadline = time.time() + 300
    while not state_file.exists():  # the first epoch's checkpoint: training is under way
        assert all(p.poll() is None for p in processes) and time.time() < deadline
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)  # a preemption notice to one worker only
    outputs = [p.communicate(timeout=300) for p in processes]
    steps = []
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
        steps.append(int(re.search(r"stopped by SIGTERM after step (\d+)", err).group(1)))
    assert steps[0] == steps[1]  # both saved at the step they agreed on
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith(
        f"ckpt-{steps[0]}")
    resumed = start_workers(tmp_path, cache_dir, *args)
    outputs = [p.communicate(timeout=400) for p in resumed]
    for process, (_, err) in zip(resumed, outputs):
        assert process.returncode == 0, err[-3000:]
    for _, err in outputs:  # both workers continue from the chief's checkpoint
        assert f"resuming {tmp_path / 'run'} at step {steps[0]}" in err
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["epoch"] for r in records] == [1, 2, 3]
