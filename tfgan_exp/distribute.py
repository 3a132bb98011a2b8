"""Choosing the tf.distribute strategy: default, mirrored, multiworker or tpu."""
import json
import os

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


def make_strategy(strategy: str, tpu: str = "") -> tf.distribute.Strategy:
    """Builds the strategy; a cluster that cannot be reached is a UsageError."""
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
