"""One GAN model with a pluggable loss pair, trained by Keras ``fit``.

The train step consumes one element of ``data.TrainingBatches``: ``d_steps``
discriminator updates, then one generator update. Under a ``tf.distribute`` strategy
each replica sees its slice of the global batch; losses are reduced once, in
``_mean_loss``, with ``tf.nn.compute_average_loss`` over the global batch, and the
gradients are summed across replicas before they are applied, so N replicas take the
same step as one device with the whole batch.
"""
import tensorflow as tf

from tfgan_exp.data import to_float
from tfgan_exp.gan.losses import LossPair, gradient_penalty

# Per-epoch means logged for each run; the report and the diagnostics read these names.
METRIC_NAMES = (
    "d_loss", "g_loss",
    "d_real_logit", "d_fake_logit",   # mean D(x), D(G(z)) as logits
    "d_real_prob", "d_fake_prob",     # the same through the sigmoid, for the BCE losses
    "g_grad_norm", "d_grad_norm",     # global L2 norm of each network's whole gradient
    "gradient_penalty",               # mean WGAN-GP penalty before its weight (0 otherwise)
)


class GAN(tf.keras.Model):
    """Generator and discriminator trained together with one ``LossPair``.

    Args:
      generator: float [batch, latent_dim] -> float [batch, H, W, C] in [-1, 1].
      discriminator: float [batch, H, W, C] -> float32 logits [batch, 1].
      losses: the loss pair (``losses.loss_pair``).
      global_batch_size: images per discriminator update over all replicas.
      d_steps: discriminator updates per generator update.
    """

    def __init__(self, generator, discriminator, losses: LossPair,
                 global_batch_size: int, d_steps: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.losses_pair = losses
        self.global_batch_size = global_batch_size
        self.d_steps = d_steps
        self.trackers = {name: tf.keras.metrics.Mean(name=name) for name in METRIC_NAMES}

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    @property
    def metrics(self):
        # Listed here so that fit resets them at the start of every epoch.
        return list(self.trackers.values())

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def _logits(self, images):
        return tf.squeeze(self.discriminator(images, training=True), axis=-1)

    def _mean_loss(self, per_example):
        """Mean over the global batch: the replicas' gradients then sum to the true one."""
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)

    @staticmethod
    def _loss_scale(optimizer):
        """The optimizer's current float16 loss scale, or None without loss scaling."""
        if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
            return optimizer.loss_scale
        return None

    @classmethod
    def _scaled(cls, optimizer, loss):
        """The loss to differentiate: multiplied by the loss scale under float16."""
        scale = cls._loss_scale(optimizer)
        return loss if scale is None else optimizer.get_scaled_loss(loss)

    @staticmethod
    def _apply(optimizer, scaled_loss, tape, variables):
        """Sums the gradient over replicas and applies it.

        Returns (global norm, weight for its running mean). Under float16 loss scaling a
        step whose gradient overflowed is skipped by the optimizer (and the scale
        lowered); its norm is then left out of the mean (weight 0) instead of ending
        the run. Everywhere else a non-finite norm is logged, and stops training.
        """
        grads = tape.gradient(scaled_loss, variables)
        loss_scaling = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
        if loss_scaling:
            grads = optimizer.get_unscaled_gradients(grads)
        grads = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, grads)
        optimizer.apply_gradients(zip(grads, variables), skip_gradients_aggregation=True)
        norm = tf.linalg.global_norm(grads)
        if not loss_scaling:
            return norm, tf.constant(1.0)
        finite = tf.math.is_finite(norm)
        return tf.where(finite, norm, 0.0), tf.cast(finite, tf.float32)

    def _d_step(self, real_images, z, gp_eps):
        losses = self.losses_pair
        with tf.GradientTape() as tape:
            fake_images = self.generator(z, training=True)
            real_logits = self._logits(real_images)
            fake_logits = self._logits(fake_images)
            per_example = losses.d_fn(real_logits, fake_logits)
            if losses.gp_weight > 0:
                penalty = gradient_penalty(self.discriminator, real_images, fake_images,
                                           gp_eps, self._loss_scale(self.d_optimizer))
                per_example += losses.gp_weight * penalty
            else:
                penalty = tf.zeros_like(per_example)
            loss = self._scaled(self.d_optimizer, self._mean_loss(per_example))
        norm, weight = self._apply(self.d_optimizer, loss, tape,
                                   self.discriminator.trainable_variables)
        t = self.trackers
        # A step skipped for a float16 overflow (weight 0) may have an infinite penalty,
        # and so loss: like its gradient norm, it is left out of the epoch's means
        # (zeroed first: inf times a zero weight would be NaN).
        kept = tf.cast(weight, tf.bool)
        t["d_loss"].update_state(tf.where(kept, per_example, 0.0), sample_weight=weight)
        t["gradient_penalty"].update_state(tf.where(kept, penalty, 0.0),
                                           sample_weight=weight)
        t["d_real_logit"].update_state(real_logits)
        t["d_fake_logit"].update_state(fake_logits)
        t["d_real_prob"].update_state(tf.sigmoid(real_logits))
        t["d_fake_prob"].update_state(tf.sigmoid(fake_logits))
        t["d_grad_norm"].update_state(norm, sample_weight=weight)

    def _g_step(self, z):
        with tf.GradientTape() as tape:
            fake_logits = self._logits(self.generator(z, training=True))
            per_example = self.losses_pair.g_fn(fake_logits)
            loss = self._scaled(self.g_optimizer, self._mean_loss(per_example))
        norm, weight = self._apply(self.g_optimizer, loss, tape,
                                   self.generator.trainable_variables)
        self.trackers["g_loss"].update_state(per_example)
        self.trackers["g_grad_norm"].update_state(norm, sample_weight=weight)

    def train_step(self, data):
        """One step on this replica's slice of ``data`` (see ``data.TrainingBatches``)."""
        real = to_float(data["images"])
        for k in range(self.d_steps):
            self._d_step(real[:, k], data["z_d"][:, k], data["gp_eps"][:, k])
        self._g_step(data["z_g"])
        return {name: tracker.result() for name, tracker in self.trackers.items()}
