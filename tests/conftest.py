"""Test set-up: one TensorFlow per process, its CPU split into two logical devices.

Two logical CPUs give a real two-replica MirroredStrategy without a GPU; this must
happen before TensorFlow initialises its devices, so it is done at import time here.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import tfgan_exp  # noqa: F401  (selects tf_keras before TensorFlow is imported)
import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(*args, timeout=300, env=None):
    """Runs ``python ARGS`` from the repository root; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


@pytest.fixture
def two_cpus():
    """Names of the two logical CPU devices."""
    return [d.name for d in tf.config.list_logical_devices("CPU")][:2]


class FakeInception(tf.Module):
    """Stands in for TF-GAN's Inception module: same interface, tiny and deterministic.

    Takes float32 [N, 299, 299, 3] in [-1, 1]; returns {'logits': [N, 1008],
    'pool_3': [N, 1, 1, 2048]}, fixed random projections of the 8x8-pooled image.
    """

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.to_logits = tf.constant(rng.normal(0, 0.5, (192, 1008)).astype(np.float32))
        self.to_pool = tf.constant(rng.normal(0, 0.1, (192, 2048)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
    def __call__(self, images):
        pooled = tf.reshape(tf.image.resize(images, [8, 8], method="area"), [-1, 192])
        return {"logits": pooled @ self.to_logits,
                "pool_3": tf.reshape(tf.nn.relu(pooled @ self.to_pool), [-1, 1, 1, 2048])}


@pytest.fixture(scope="session")
def fake_inception_dir(tmp_path_factory):
    """A directory holding the fake Inception as a SavedModel, loadable by hub.load."""
    path = str(tmp_path_factory.mktemp("inception"))
    tf.saved_model.save(FakeInception(), path)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache for the session: the digits classifier is trained once."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def online(monkeypatch):
    """Stands in for a machine that can reach the TFDS download hosts.

    Used with ``tfds.testing.mock_data``, which stands in for the downloaded files: the
    loader checks the hosts of a dataset that is not prepared before TFDS downloads it.
    """
    from tfgan_exp import data
    monkeypatch.setattr(data, "unreachable_hosts", lambda urls, timeout=10.0: [])
