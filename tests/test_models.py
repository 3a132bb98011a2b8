"""The SN-GAN standard CNN at every supported size."""
import numpy as np
import pytest
import tensorflow as tf

from tfgan_exp.gan import networks, spectral_norm


@pytest.mark.parametrize("shape", [(16, 16, 1), (32, 32, 3), (48, 48, 3)])
def test_networks_map_noise_to_images_to_logits(shape):
    g = networks.build_generator(shape, latent_dim=8, width=4)
    d = networks.build_discriminator(shape, width=4)
    images = g(tf.random.normal([2, 8]), training=False)
    assert images.shape == (2,) + shape
    assert np.all(np.abs(images.numpy()) <= 1.0)  # tanh output, the data's range
    logits = d(images)
    assert logits.shape == (2, 1) and logits.dtype == tf.float32


def test_layer_plan_follows_the_sn_gan_table():
    d = networks.build_discriminator((32, 32, 3), width=64)
    convs = [layer for layer in d.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0], c.strides[0]) for c in convs] == [
        (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1)]
    g = networks.build_generator((32, 32, 3), latent_dim=128, width=64)
    assert g.get_layer("g_dense").units == 4 * 4 * 512
    assert [g.get_layer(f"g_deconv{i}").filters for i in (1, 2, 3)] == [256, 128, 64]


def test_spectral_norm_normalises_every_discriminator_layer():
    d = networks.build_discriminator((16, 16, 1), width=4, spectral_norm=True)
    normalised = [layer for layer in d.layers
                  if isinstance(layer, spectral_norm.SpectralNormMixin)]
    assert len(normalised) == 8  # seven convolutions and the dense logit
    x = tf.random.normal([2, 16, 16, 1])
    assert d(x, training=True).shape == (2, 1)
    # u is state the checkpoint keeps, not something trained.
    assert sum("sn_u" in v.name for v in d.non_trainable_variables) == 8
    assert not any("sn_u" in v.name for v in d.trainable_variables)


# --- spectral normalisation (Miyato et al. 2018) ---------------------------------------

def sn_conv(shape=(3, 3, 4, 6), seed=0):
    """A built SNConv2D with a known random kernel."""
    layer = spectral_norm.SNConv2D(shape[-1], shape[:2], padding="same")
    layer.build((None, 8, 8, shape[2]))
    layer.kernel.assign(np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32))
    return layer


def test_sigma_converges_to_the_largest_singular_value():
    layer = sn_conv()
    x = tf.random.normal([2, 8, 8, 4])
    for _ in range(60):  # one power iteration per training call
        layer(x, training=True)
    largest = np.linalg.svd(layer.kernel.numpy().reshape(-1, 6), compute_uv=False)[0]
    sigma, _ = layer.spectral_norm(training=False)
    assert float(sigma) == pytest.approx(largest, rel=1e-4)
    normalised = layer.normalised_kernel().numpy().reshape(-1, 6)
    assert np.linalg.svd(normalised, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-4)
    u = layer.sn_u.numpy()
    layer(x, training=False)  # inference leaves u alone
    np.testing.assert_array_equal(layer.sn_u.numpy(), u)


def test_gradient_flows_through_sigma_as_for_an_explicit_w_over_sigma():
    layer = sn_conv(seed=1)
    x = tf.random.normal([2, 8, 8, 4], seed=3)
    u = tf.constant(layer.sn_u.numpy())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, training=False)))
    ours = tape.gradient(loss, layer.kernel).numpy()
    # The same function written out: sigma = v W u'^T from the stored u, u and v constant.
    kernel = tf.Variable(layer.kernel.numpy())
    with tf.GradientTape() as tape:
        w = tf.reshape(kernel, [-1, 6])
        v = tf.math.l2_normalize(tf.matmul(u, w, transpose_b=True))
        u2 = tf.math.l2_normalize(tf.matmul(v, w))
        v, u2 = tf.stop_gradient(v), tf.stop_gradient(u2)
        sigma = tf.squeeze(tf.matmul(tf.matmul(v, w), u2, transpose_b=True))
        out = tf.nn.conv2d(x, kernel / sigma, 1, "SAME") + layer.bias
        explicit = tape.gradient(tf.reduce_sum(tf.square(out)), kernel).numpy()
    np.testing.assert_allclose(ours, explicit, rtol=1e-4, atol=1e-6)
    # A projection (Keras's layer: no gradient through sigma) differs measurably.
    with tf.GradientTape() as tape:
        out = tf.nn.conv2d(x, kernel / tf.stop_gradient(sigma), 1, "SAME") + layer.bias
        projected = tape.gradient(tf.reduce_sum(tf.square(out)), kernel).numpy()
    assert np.abs(projected - ours).max() > 1e-3 * np.abs(ours).max()


@pytest.mark.parametrize("policy, low", [("mixed_bfloat16", tf.bfloat16),
                                         ("mixed_float16", tf.float16)])
def test_under_mixed_precision_the_kernel_stays_float32_and_small_steps_count(policy, low):
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        d = networks.build_discriminator((16, 16, 1), width=32, spectral_norm=True)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    conv = d.get_layer("d_conv6")  # 3x3, 128 -> 256 channels
    assert conv.kernel.dtype == tf.float32 and conv.compute_dtype == low.name
    lr = 1e-6  # far below the low precision's resolution at these weights (~1e-4)
    optimizer = tf.keras.optimizers.Adam(lr)
    before = conv.kernel.numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(d(tf.random.normal([4, 16, 16, 1]), training=True))
    variables = d.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    d(tf.random.normal([4, 16, 16, 1]), training=True)  # a training call writes nothing
    after = conv.kernel.numpy()
    # Adam's first step moves each weight by at most lr: nearly all moved (none rounded
    # away), and by no more than that (only the optimizer writes the kernel).
    assert np.mean(after != before) > 0.99
    assert np.abs(after - before).max() <= lr * 1.001
    # Keras's layer writes the low-precision kernel back: every entry representable.
    representable = after == tf.cast(tf.cast(after, low), tf.float32).numpy()
    assert representable.mean() < 0.01
