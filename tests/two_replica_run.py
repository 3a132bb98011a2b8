"""``run.py`` on two replicas without a GPU: ``python tests/two_replica_run.py FLAGS``.

The CPU is split into two logical devices and the strategy factory hands out a
MirroredStrategy over them, standing in for a machine with two GPUs; everything else is
the real command line. Used by the tests, which cannot split the CPU of a subprocess
otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfgan_exp  # noqa: E402,F401  (selects tf_keras before TensorFlow is imported)
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from tfgan_exp import cli  # noqa: E402
from tfgan_exp.runtime import distribute

_DEVICES = [device.name for device in tf.config.list_logical_devices("CPU")]
# Below make_strategy, so that its one-strategy-per-process rule is the real one.
distribute._build_strategy = lambda name, tpu="": tf.distribute.MirroredStrategy(_DEVICES)

if __name__ == "__main__":
    cli.run()
