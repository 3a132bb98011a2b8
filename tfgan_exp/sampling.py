"""Generating images from noise under any strategy, in chunks of bounded size."""
import numpy as np
import tensorflow as tf


class Sampler:
    """Runs ``generator(z, training=False)`` on every replica and gathers the images.

    Args:
      strategy: the strategy the generator's variables were created under.
      generator: float [batch, latent_dim] -> float [batch, H, W, C] in [-1, 1].
      chunk_size: images per forward pass over all replicas; rounded up to a multiple
        of the replica count.
    """

    def __init__(self, strategy: tf.distribute.Strategy, generator, chunk_size: int = 256):
        replicas = strategy.num_replicas_in_sync
        self.strategy = strategy
        self.chunk_size = -(-chunk_size // replicas) * replicas

        @tf.function
        def step(z):
            images = strategy.run(lambda z: generator(z, training=False), args=(z,))
            return strategy.gather(images, axis=0)

        self._step = step

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """float32 [N, latent_dim] -> float32 [N, H, W, C] in [-1, 1], in the order of z."""
        n = len(z)
        padded = np.concatenate([z, np.zeros((-n % self.chunk_size,) + z.shape[1:], z.dtype)])
        dataset = tf.data.Dataset.from_tensor_slices(padded).batch(
            self.chunk_size, drop_remainder=True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        dataset = self.strategy.experimental_distribute_dataset(dataset.with_options(options))
        chunks = [self._step(batch).numpy() for batch in dataset]
        return np.concatenate(chunks)[:n]
