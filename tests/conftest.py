"""Test set-up: one TensorFlow per process, its CPU split into two logical devices.

Two logical CPUs give a real two-replica MirroredStrategy without a GPU; this must
happen before TensorFlow initialises its devices, so it is done at import time here.
"""
import os
import subprocess
import sys

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
