"""The train step: two replicas take exactly the step one device takes."""
import numpy as np
import pytest
import tensorflow as tf

from tfgan_exp import data
from tfgan_exp.config import Config
from tfgan_exp.training.trainer import build_gan

IMAGE_SHAPE = (16, 16, 1)


def tiny_config(**overrides):
    values = dict(dataset="digits", image_size=16, width=4, latent_dim=8, batch_size=8,
                  d_steps=2, lr_g=1e-3, lr_d=1e-3)
    values.update(overrides)
    return Config(**values).resolved()


def networks_weights(gan, new=None):
    """The generator's then the discriminator's variables (trainable or not), or sets them."""
    networks = (gan.generator, gan.discriminator)
    if new is None:
        return [w for net in networks for w in net.get_weights()]
    split = len(gan.generator.get_weights())
    gan.generator.set_weights(new[:split])
    gan.discriminator.set_weights(new[split:])


def one_step(strategy, config, batches, weights=None):
    """Builds the GAN under ``strategy``, optionally loads ``weights``, fits two steps
    (each: two D updates, one G update)."""
    with strategy.scope():
        gan = build_gan(config, IMAGE_SHAPE)
    if weights is not None:
        networks_weights(gan, weights)
    history = gan.fit(batches.dataset(0, 2), epochs=1, steps_per_epoch=2, verbose=0)
    return gan, {k: v[-1] for k, v in history.history.items()}


@pytest.mark.parametrize("g_loss", ["nonsat", "wgan-gp"])
@pytest.mark.slow
def test_two_replicas_take_the_same_step_as_one_device(two_cpus, mirrored, g_loss):
    config = tiny_config(g_loss=g_loss)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64,) + IMAGE_SHAPE, dtype=np.uint8)
    batches = data.TrainingBatches(images, config.batch_size, config.d_steps,
                                   config.latent_dim, seed=1)
    tf.keras.utils.set_random_seed(0)
    with tf.distribute.OneDeviceStrategy(two_cpus[0]).scope():
        initial = networks_weights(build_gan(config, IMAGE_SHAPE))
    reference, reference_logs = one_step(tf.distribute.OneDeviceStrategy(two_cpus[0]),
                                         config, batches, initial)
    on_two, mirrored_logs = one_step(mirrored, config, batches, initial)
    assert on_two.distribute_strategy.num_replicas_in_sync == 2
    moved = [np.abs(a - b).max() for a, b in zip(initial, networks_weights(reference))]
    assert max(moved) > 1e-3  # the step really changed the weights
    for key in reference_logs:  # logged values are global means, not one replica's
        np.testing.assert_allclose(mirrored_logs[key], reference_logs[key],
                                   rtol=1e-4, atol=1e-5, err_msg=key)
    for ref, got in zip(networks_weights(reference), networks_weights(on_two)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert {"d_loss", "g_loss", "d_fake_prob", "g_grad_norm"} <= set(reference_logs)


@pytest.mark.slow
def test_optimizer_iterations_count_updates(two_cpus):
    config = tiny_config(d_steps=3)
    images = np.zeros((64,) + IMAGE_SHAPE, np.uint8)
    batches = data.TrainingBatches(images, 8, 3, 8, seed=0)
    gan, logs = one_step(tf.distribute.get_strategy(), config, batches)
    assert int(gan.g_optimizer.iterations.numpy()) == 2
    assert int(gan.d_optimizer.iterations.numpy()) == 6
    assert all(np.isfinite(v) for v in logs.values())


@pytest.mark.parametrize("precision, spectral_norm, g_loss", [
    ("bf16", False, "nonsat"), ("fp16", False, "nonsat"),
    ("bf16", True, "wgan-gp"), ("fp16", True, "wgan-gp")])  # fp16 + SN once crashed in fit
@pytest.mark.slow
def test_mixed_precision_steps_are_finite_with_float32_logits(precision, spectral_norm,
                                                              g_loss):
    config = tiny_config(d_steps=1, mixed_precision=precision, spectral_norm=spectral_norm,
                         g_loss=g_loss)
    batches = data.TrainingBatches(np.zeros((64,) + IMAGE_SHAPE, np.uint8), 8, 1, 8, seed=0)
    gan, logs = one_step(tf.distribute.get_strategy(), config, batches)
    assert gan.generator.get_layer("g_dense").compute_dtype == {"bf16": "bfloat16",
                                                                "fp16": "float16"}[precision]
    assert gan.discriminator.output.dtype == tf.float32
    assert int(gan.g_optimizer.iterations.numpy()) == 2
    assert all(np.isfinite(v) for v in logs.values()), logs
    if precision == "fp16":
        assert isinstance(gan.d_optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
