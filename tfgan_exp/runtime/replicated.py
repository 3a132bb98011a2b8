"""Running a network on every replica of a strategy, chunk by chunk, results in order.

Generating images, classifying them, and the two fused (evaluation) all map a batch of
inputs to outputs with no state; ``ReplicatedMap`` splits each chunk across the
strategy's replicas, runs the function on each, and gathers the outputs in input order,
so N devices share the work and the numbers equal one device's.
"""
import numpy as np
import tensorflow as tf


class ReplicatedMap:
    """``fn`` over a numpy array on every replica of ``strategy``.

    Args:
      strategy: the strategy whose scope created ``fn``'s variables.
      fn: float32 tensor [batch, ...] -> a tensor or a tuple of tensors, each [batch, ...];
        traced once per input shape.
      chunk_size: inputs per replica per call: the whole chunk is
        ``chunk_size x replicas`` inputs, which bounds memory on every device.
    """

    def __init__(self, strategy: tf.distribute.Strategy, fn, chunk_size: int = 256):
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        self.chunk_size = chunk_size * self.replicas

        @tf.function
        def step(inputs):
            outputs = strategy.run(fn, args=(inputs,))
            return tf.nest.map_structure(lambda o: strategy.gather(o, axis=0), outputs)

        self._step = step
        self._traced = {}  # (chunk length, input shape, dtype) -> its concrete function

    def __call__(self, inputs: np.ndarray):
        """[N, ...] -> the outputs for all N inputs, numpy, in input order.

        Inputs go in chunks of ``chunk_size x replicas``, or fewer when N is smaller (no
        work is wasted on a short set); the last chunk is padded with zeros to a whole
        chunk (static shapes), and the padding's outputs are dropped.
        """
        n = len(inputs)
        chunk = min(self.chunk_size, max(1, -(-n // self.replicas)) * self.replicas)
        padded = np.concatenate(
            [inputs, np.zeros((-n % chunk,) + inputs.shape[1:], inputs.dtype)])
        dataset = tf.data.Dataset.from_tensor_slices(padded).batch(chunk, drop_remainder=True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        dataset = self.strategy.experimental_distribute_dataset(dataset.with_options(options))
        signature = (chunk, inputs.shape[1:], inputs.dtype)
        if signature not in self._traced:
            # Traced once per input signature, then called directly: a process holding
            # many maps (a grid's runs) is not warned of "retracing".
            self._traced[signature] = self._step.get_concrete_function(dataset.element_spec)
        step = self._traced[signature]
        chunks = [tf.nest.map_structure(lambda t: t.numpy(), step(batch)) for batch in dataset]
        return tf.nest.map_structure(lambda *parts: np.concatenate(parts)[:n], *chunks)
