"""The SN-GAN standard CNN at every supported size."""
import numpy as np
import pytest
import tensorflow as tf

from tfgan_exp import models


@pytest.mark.parametrize("shape", [(16, 16, 1), (32, 32, 3), (48, 48, 3)])
def test_networks_map_noise_to_images_to_logits(shape):
    g = models.build_generator(shape, latent_dim=8, width=4)
    d = models.build_discriminator(shape, width=4)
    images = g(tf.random.normal([2, 8]), training=False)
    assert images.shape == (2,) + shape
    assert np.all(np.abs(images.numpy()) <= 1.0)  # tanh output, the data's range
    logits = d(images)
    assert logits.shape == (2, 1) and logits.dtype == tf.float32


def test_layer_plan_follows_the_sn_gan_table():
    d = models.build_discriminator((32, 32, 3), width=64)
    convs = [layer for layer in d.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0], c.strides[0]) for c in convs] == [
        (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1)]
    g = models.build_generator((32, 32, 3), latent_dim=128, width=64)
    assert g.get_layer("g_dense").units == 4 * 4 * 512
    assert [g.get_layer(f"g_deconv{i}").filters for i in (1, 2, 3)] == [256, 128, 64]


def test_spectral_norm_wraps_every_discriminator_layer():
    d = models.build_discriminator((16, 16, 1), width=4, spectral_norm=True)
    spectral = tf.keras.layers.SpectralNormalization
    wrapped = [layer for layer in d.layers if isinstance(layer, spectral)]
    assert len(wrapped) == 8  # seven convolutions and the dense logit
    x = tf.random.normal([2, 16, 16, 1])
    assert d(x, training=True).shape == (2, 1)
