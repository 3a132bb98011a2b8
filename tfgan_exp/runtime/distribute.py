"""Choosing the tf.distribute strategy: default, mirrored, multiworker or tpu."""
import glob
import json
import os
import sys

import tensorflow as tf

from tfgan_exp.config import UsageError


def resolve_name(strategy: str, tpu: str = "") -> str:
    """``auto`` -> ``tpu`` when one is configured, ``mirrored`` on 2+ GPUs, else ``default``."""
    if strategy != "auto":
        return strategy
    if tpu or os.environ.get("TPU_NAME"):
        return "tpu"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


GPU_INSTALL_HINT = ("pip install -r requirements-gpu.txt (tensorflow[and-cuda]), or "
                    "make demo GPU=1")


def nvidia_gpus_present(dev_dir: str = "/dev",
                        proc_dir: str = "/proc/driver/nvidia/gpus") -> bool:
    """True when the NVIDIA driver exposes a GPU (a /dev/nvidiaN device or a driver entry)."""
    return bool(glob.glob(os.path.join(dev_dir, "nvidia[0-9]*"))
                or glob.glob(os.path.join(proc_dir, "*")))


def unused_gpu_note(tensorflow_gpus: int, present: bool) -> str:
    """One line for a machine whose NVIDIA GPU TensorFlow cannot see ("" otherwise)."""
    if tensorflow_gpus or not present:
        return ""
    return ("note: this machine has an NVIDIA GPU but TensorFlow sees none, so training "
            "runs on the CPU; TensorFlow's CUDA libraries are missing: " + GPU_INSTALL_HINT)


_STRATEGIES = {}  # one strategy per process and name: see make_strategy


def make_strategy(strategy: str, tpu: str = "") -> tf.distribute.Strategy:
    """The strategy, built once per process; a cluster that cannot be reached is a
    UsageError.

    The runs of a grid trained in one process share it: two MirroredStrategy objects
    over the same devices number their collective operations alike, and the second's
    then clash with the first's ("Collective instance ... expected type").
    """
    key = (resolve_name(strategy, tpu), tpu)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _build_strategy(strategy, tpu)
    return _STRATEGIES[key]


def _build_strategy(strategy: str, tpu: str) -> tf.distribute.Strategy:
    note = unused_gpu_note(len(tf.config.list_physical_devices("GPU")), nvidia_gpus_present())
    if note:
        print(note, file=sys.stderr)
    name = resolve_name(strategy, tpu)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError("--strategy=multiworker needs the cluster in TF_CONFIG, e.g. "
                             '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                             '"task": {"type": "worker", "index": 0}}')
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as error:
            raise UsageError(f"TF_CONFIG is not valid JSON: {error}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        address = tpu or os.environ.get("TPU_NAME", "")
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu="" if address == "local" else address)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError, RuntimeError) as error:
            raise UsageError(f"cannot connect to the TPU {address!r}: {error}") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UsageError(f"--strategy={strategy}: unknown; choose one of "
                     "auto, default, mirrored, multiworker, tpu")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process writes the run directory (always, but on a non-chief worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    if not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def is_cluster(strategy_name: str, tpu: str = "") -> bool:
    """True for strategies whose workers must act together (multiworker, tpu)."""
    return resolve_name(strategy_name, tpu) in ("multiworker", "tpu")


def agreement(strategy: tf.distribute.Strategy):
    """A function int -> int: the largest of the values every worker passes in.

    Every worker must call it at the same point (it is an all-gather across all
    replicas); it returns once all have. Used to agree on stopping and as a barrier.
    """

    def replica_max(value):
        # ReduceOp has no MAX: gather every replica's value, then take the largest.
        gathered = tf.distribute.get_replica_context().all_gather(value[None], axis=0)
        return tf.reduce_max(gathered)

    @tf.function
    def largest(value):
        return strategy.experimental_local_results(strategy.run(replica_max, args=(value,)))[0]

    # float32: every collective implementation reduces it (small integers are exact).
    return lambda value: int(largest(tf.constant(value, tf.float32)).numpy())


def spread(agree, value: int):
    """(lowest, highest) of ``value`` over every worker, through ``agree`` (above):
    equal on every worker exactly when all passed the same value (|value| < 2**24)."""
    return -agree(-value), agree(value)
