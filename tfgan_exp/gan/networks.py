"""The SN-GAN paper's "standard CNN" DCGAN, built from the image shape.

Miyato et al. 2018, table 3. With ``width`` = w (64 in the paper) and M = size / 8:

  G: z [batch, latent_dim] -> dense M*M*8w, BN, ReLU -> 4x4 stride-2 transposed convs
     4w, 2w, w, each with BN and ReLU -> 3x3 conv to C channels -> tanh, [batch, H, W, C]
     in [-1, 1].
  D: images [batch, H, W, C] in [-1, 1] -> convs (3x3 s1 w, 4x4 s2 w, 3x3 s1 2w,
     4x4 s2 2w, 3x3 s1 4w, 4x4 s2 4w, 3x3 s1 8w), leaky ReLU 0.1 -> dense -> logits
     [batch, 1], float32 even under mixed precision.

Batch normalization is synchronized across replicas, so that a step on N replicas
normalises over the global batch exactly as one device does.
"""
import tensorflow as tf

from tfgan_exp.gan.spectral_norm import SNConv2D, SNDense

layers = tf.keras.layers


def build_generator(image_shape, latent_dim: int, width: int = 64) -> tf.keras.Model:
    """Returns G: float [batch, latent_dim] -> float [batch, H, W, C] in [-1, 1].

    Args:
      image_shape: (H, W, C) with H == W a multiple of 8.
    """
    size, _, channels = image_shape
    base = size // 8
    z = tf.keras.Input(shape=(latent_dim,), name="z")
    # No bias before batch norm: BN's offset replaces it, and its gradient is zero.
    x = layers.Dense(base * base * 8 * width, use_bias=False, name="g_dense")(z)
    x = layers.BatchNormalization(synchronized=True, name="g_bn0")(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((base, base, 8 * width))(x)
    for i, multiple in enumerate((4, 2, 1), start=1):
        x = layers.Conv2DTranspose(multiple * width, 4, strides=2, padding="same",
                                   use_bias=False, name=f"g_deconv{i}")(x)
        x = layers.BatchNormalization(synchronized=True, name=f"g_bn{i}")(x)
        x = layers.ReLU()(x)
    x = layers.Conv2D(channels, 3, padding="same", name="g_to_image")(x)
    images = layers.Activation("tanh", dtype="float32", name="g_tanh")(x)
    return tf.keras.Model(z, images, name="generator")


def build_discriminator(image_shape, width: int = 64,
                        spectral_norm: bool = False) -> tf.keras.Model:
    """Returns D: float [batch, H, W, C] in [-1, 1] -> float32 logits [batch, 1].

    With ``spectral_norm`` every layer is spectrally normalised as in SN-GAN
    (``spectral_norm.SNConv2D`` and ``SNDense``).
    """
    conv = SNConv2D if spectral_norm else layers.Conv2D
    dense = SNDense if spectral_norm else layers.Dense
    images = tf.keras.Input(shape=tuple(image_shape), name="images")
    x = images
    plan = [(3, 1, 1), (4, 2, 1), (3, 1, 2), (4, 2, 2), (3, 1, 4), (4, 2, 4), (3, 1, 8)]
    for i, (kernel, stride, multiple) in enumerate(plan):
        x = conv(multiple * width, kernel, strides=stride, padding="same",
                 name=f"d_conv{i}")(x)
        x = layers.LeakyReLU(0.1)(x)
    x = layers.Flatten()(x)
    logits = dense(1, dtype="float32", name="d_logit")(x)
    return tf.keras.Model(images, logits, name="discriminator")
