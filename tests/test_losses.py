"""Every loss against hand-computed values and against TF-GAN's own functions."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfgan_exp.gan import losses
from tfgan_exp.evaluation.tfgan import tfgan_losses

R = np.array([2.0, -1.0, 0.0, 0.5], np.float32)   # real logits
F = np.array([-3.0, 1.0, 0.0, -0.5], np.float32)  # fake logits


def softplus(x):
    return math.log1p(math.exp(x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# name -> per-example values computed by hand from the definitions in the README's losses table.
G_EXPECTED = {
    "minimax": [math.log(1 - sigmoid(f)) for f in F],
    "nonsat": [-math.log(sigmoid(f)) for f in F],
    "hinge": [-f for f in F],
    "wgan-gp": [-f for f in F],
    "lsgan": [(f - 1) ** 2 / 2 for f in F],
}
D_EXPECTED = {
    "bce": [-math.log(sigmoid(r)) - math.log(1 - sigmoid(f)) for r, f in zip(R, F)],
    "hinge": [max(0, 1 - r) + max(0, 1 + f) for r, f in zip(R, F)],
    "wgan-gp": [f - r for r, f in zip(R, F)],
    "lsgan": [(r - 1) ** 2 / 2 + f ** 2 / 2 for r, f in zip(R, F)],
}

NONE = tf.compat.v1.losses.Reduction.NONE
# TF-GAN's functions with no label smoothing and no reduction, as oracles.
G_TFGAN = {
    # TF-GAN's minimax G loss is -(D's BCE with real logits fixed at 1): ours plus the
    # constant -softplus(-1), which changes no gradient. Add it back to compare.
    "minimax": lambda f: tfgan_losses.minimax_generator_loss(f, 0.0, reduction=NONE)
    + tf.math.softplus(-1.0),
    "nonsat": lambda f: tfgan_losses.modified_generator_loss(f, 0.0, reduction=NONE),
    "hinge": lambda f: tfgan_losses.wasserstein_generator_loss(f, reduction=NONE),
    "wgan-gp": lambda f: tfgan_losses.wasserstein_generator_loss(f, reduction=NONE),
    "lsgan": lambda f: tfgan_losses.least_squares_generator_loss(f, reduction=NONE),
}
D_TFGAN = {
    "bce": lambda r, f: tfgan_losses.modified_discriminator_loss(r, f, 0.0, reduction=NONE),
    "hinge": lambda r, f: tfgan_losses.wasserstein_hinge_discriminator_loss(
        r, f, reduction=NONE),
    "wgan-gp": lambda r, f: tfgan_losses.wasserstein_discriminator_loss(r, f, reduction=NONE),
    "lsgan": lambda r, f: tfgan_losses.least_squares_discriminator_loss(r, f, reduction=NONE),
}


def test_registries_cover_every_name():
    assert set(G_EXPECTED) == set(losses.G_LOSSES) == set(G_TFGAN)
    assert set(D_EXPECTED) == set(losses.D_LOSSES) == set(D_TFGAN)


@pytest.mark.parametrize("name", sorted(G_EXPECTED))
def test_generator_loss_values(name):
    out = losses.G_LOSSES[name](tf.constant(F))
    assert out.shape == F.shape and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), G_EXPECTED[name], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), G_TFGAN[name](tf.constant(F)).numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(D_EXPECTED))
def test_discriminator_loss_values(name):
    out = losses.D_LOSSES[name](tf.constant(R), tf.constant(F))
    assert out.shape == R.shape and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), D_EXPECTED[name], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        out.numpy(), D_TFGAN[name](tf.constant(R), tf.constant(F)).numpy(),
        rtol=1e-5, atol=1e-6)


def test_saturating_gradient_vanishes_where_nonsaturating_does_not():
    """The article's question in one line: d loss / d f as D rejects fakes (f -> -10)."""
    f = tf.constant([-10.0])
    grads = {}
    for name in ("minimax", "nonsat"):
        with tf.GradientTape() as tape:
            tape.watch(f)
            loss = losses.G_LOSSES[name](f)
        grads[name] = abs(float(tape.gradient(loss, f)[0]))
    assert grads["minimax"] < 1e-4 and grads["nonsat"] > 0.99


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm():
    # D(x) = sum(w * x) has gradient w everywhere: penalty = (||w|| - 1)^2.
    w = tf.constant(np.full((1, 2, 2, 1), 0.25, np.float32))  # ||w|| = 0.5

    def critic(x, training=True):
        return tf.reduce_sum(w * x, axis=[1, 2, 3])

    real = tf.random.normal([3, 2, 2, 1])
    fake = tf.random.normal([3, 2, 2, 1])
    out = losses.gradient_penalty(critic, real, fake, tf.constant([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(out.numpy(), [0.25] * 3, rtol=1e-5)


def test_gradient_penalty_uses_the_interpolate():
    # D(x) = sum(x^2) / 2 has gradient x: the norm is that of eps * real + (1 - eps) * fake.
    def critic(x, training=True):
        return 0.5 * tf.reduce_sum(tf.square(x), axis=[1, 2, 3])

    real = tf.fill([2, 1, 1, 1], 3.0)
    fake = tf.fill([2, 1, 1, 1], 1.0)
    out = losses.gradient_penalty(critic, real, fake, tf.constant([1.0, 0.25]))
    np.testing.assert_allclose(out.numpy(), [(3 - 1) ** 2, (1.5 - 1) ** 2], rtol=1e-5)


def test_loss_pair_defaults_and_unknown_names():
    assert losses.loss_pair("minimax").d_name == "bce"
    assert losses.loss_pair("hinge").d_name == "hinge"
    assert losses.loss_pair("wgan-gp", gp_weight=5.0).gp_weight == 5.0
    assert losses.loss_pair("nonsat", "hinge", gp_weight=5.0).gp_weight == 0.0
    with pytest.raises(ValueError, match="choose one of"):
        losses.loss_pair("saturating")
    with pytest.raises(ValueError, match="choose one of"):
        losses.loss_pair("nonsat", "wasserstein")


def test_under_float16_the_penalty_gradient_is_loss_scaled_instead_of_underflowing():
    """A critic whose per-pixel input gradients (about 2e-7) lie below float16's normal
    range, where a CPU either flushes them to zero or keeps them on float16's subnormal
    grid of 6e-8 steps: neither carries them to 1%, and the loss scale must."""
    def critic(policy):
        tf.keras.mixed_precision.set_global_policy(policy)
        try:
            layers = tf.keras.layers
            x = tf.keras.Input((8, 8, 1))
            h = layers.Conv2D(4, 3, padding="same", use_bias=False,
                              kernel_initializer=tf.keras.initializers.Constant(1e-4))(x)
            logit = layers.Dense(1, dtype="float32", use_bias=False,
                                 kernel_initializer=tf.keras.initializers.Constant(1e-4))(
                layers.Flatten()(h))
            return tf.keras.Model(x, logit)
        finally:
            tf.keras.mixed_precision.set_global_policy("float32")

    images = tf.random.uniform([2, 8, 8, 1], -1, 1, seed=0)
    exact = losses.input_gradients(critic("float32"), images).numpy()
    half = critic("mixed_float16")
    unscaled = losses.input_gradients(half, images).numpy()
    scaled = losses.input_gradients(half, images, loss_scale=2.0 ** 15).numpy()
    assert np.abs(exact).min() > 1e-9  # every pixel has a gradient...
    assert np.abs(exact).max() < np.finfo(np.float16).tiny  # ...below float16's normals
    np.testing.assert_allclose(scaled, exact, rtol=1e-2)  # what the code guarantees
    # Without the scale float16 loses them (to zero, or to its subnormal grid): whether
    # a CPU flushes subnormals or keeps them (avx512_fp16) is not asserted.
    assert not np.allclose(unscaled, exact, rtol=1e-2, atol=0)
