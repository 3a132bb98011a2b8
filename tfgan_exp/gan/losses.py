"""GAN losses as small per-example functions of the discriminator's logits.

Notation: ``real_logits = D(x)`` and ``fake_logits = D(G(z))``, float tensors of shape
[batch] (any real value); sigma is the logistic sigmoid. Every function returns the
per-example loss, shape [batch], and leaves the reduction to the train step, which is
the one place that knows the global batch size (see ``model.GAN``).

Note on the founding article's pseudo-code: it labels ``BCE(D(G(z)), ones)`` as
"min log(1 - D)" and ``-BCE(D(G(z)), zeros)`` as "max log D". The first is in fact the
non-saturating loss and the second the saturating one. This module uses the textbook
definitions (Goodfellow et al. 2014), as the README's losses table gives them.
"""
import dataclasses
from typing import Callable

import tensorflow as tf

from tfgan_exp.config import D_LOSS_NAMES, D_PARTNER, G_LOSS_NAMES

LossFn = Callable[..., tf.Tensor]


# --- generator losses: functions of fake_logits ---------------------------------------

def g_minimax(fake_logits):
    """Saturating generator loss, minimised by G: L = log(1 - sigma(f)) = -softplus(f).

    Goodfellow et al. 2014, eq. 1. Its gradient vanishes when D confidently rejects
    fakes (f -> -inf), the reason the non-saturating loss was proposed.
    """
    return -tf.math.softplus(fake_logits)


def g_nonsat(fake_logits):
    """Non-saturating ("max log D") generator loss: L = -log(sigma(f)) = softplus(-f)."""
    return tf.math.softplus(-fake_logits)


def g_wasserstein(fake_logits):
    """Generator loss for the hinge and Wasserstein critics: L = -f."""
    return -fake_logits


def g_least_squares(fake_logits):
    """Least-squares generator loss (Mao et al. 2017, a=0, b=c=1): L = (f - 1)^2 / 2."""
    return 0.5 * tf.math.squared_difference(fake_logits, 1.0)


# --- discriminator losses: functions of real_logits and fake_logits -------------------

def d_cross_entropy(real_logits, fake_logits):
    """Binary cross-entropy, real = 1 and fake = 0, no label smoothing.

    L = -log(sigma(r)) - log(1 - sigma(f)) = softplus(-r) + softplus(f).
    """
    return tf.math.softplus(-real_logits) + tf.math.softplus(fake_logits)


def d_hinge(real_logits, fake_logits):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): L = relu(1 - r) + relu(1 + f)."""
    return tf.nn.relu(1.0 - real_logits) + tf.nn.relu(1.0 + fake_logits)


def d_wasserstein(real_logits, fake_logits):
    """Wasserstein critic loss (Arjovsky et al. 2017): L = f - r.

    With ``wgan-gp`` the train step adds the gradient penalty ``gradient_penalty``.
    """
    return fake_logits - real_logits


def d_least_squares(real_logits, fake_logits):
    """Least-squares discriminator loss: L = (r - 1)^2 / 2 + f^2 / 2."""
    return 0.5 * tf.math.squared_difference(real_logits, 1.0) + 0.5 * tf.square(fake_logits)


def input_gradients(discriminator, images, loss_scale=None):
    """grad_x D(x) for images float [batch, H, W, C]: float [batch, H, W, C].

    Under float16 the backward pass through D can underflow (its per-pixel gradients
    are small); ``loss_scale`` (the optimizer's current scale) multiplies D's output
    before the gradient is taken and divides the gradient after, as the outer loss
    scaling does for the weights.
    """
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = discriminator(images, training=True)
        if loss_scale is not None:
            logits = logits * tf.cast(loss_scale, logits.dtype)
    grads = tape.gradient(logits, images)
    if loss_scale is not None:
        grads = grads / tf.cast(loss_scale, grads.dtype)
    return grads


def input_gradient_norms(discriminator, images, loss_scale=None):
    """||grad_x D(x)||_2 per image, float [batch] (see ``input_gradients``).

    Has 1e-10 under the square root, as in TF-GAN, so that its gradient stays finite
    where the input gradient is zero.
    """
    grads = input_gradients(discriminator, images, loss_scale)
    return tf.sqrt(1e-10 + tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))


def gradient_penalty(discriminator, real_images, fake_images, epsilon, loss_scale=None):
    """WGAN-GP penalty (Gulrajani et al. 2017, eq. 3): (||grad_x D(x_hat)||_2 - 1)^2.

    Args:
      discriminator: callable images -> logits [batch] or [batch, 1].
      real_images, fake_images: float [batch, H, W, C] in [-1, 1].
      epsilon: float [batch], uniform in [0, 1]: x_hat = eps * x + (1 - eps) * G(z).
      loss_scale: the float16 loss scale, or None (see ``input_gradient_norms``).

    Returns:
      float [batch].
    """
    eps = tf.reshape(epsilon, [-1, 1, 1, 1])
    interpolated = eps * real_images + (1.0 - eps) * fake_images
    return tf.square(input_gradient_norms(discriminator, interpolated, loss_scale) - 1.0)


G_LOSSES = {
    "minimax": g_minimax,
    "nonsat": g_nonsat,
    "hinge": g_wasserstein,
    "wgan-gp": g_wasserstein,
    "lsgan": g_least_squares,
}
D_LOSSES = {
    "bce": d_cross_entropy,
    "hinge": d_hinge,
    "wgan-gp": d_wasserstein,
    "lsgan": d_least_squares,
}
assert set(G_LOSSES) == set(G_LOSS_NAMES) and set(D_LOSSES) == set(D_LOSS_NAMES)


@dataclasses.dataclass(frozen=True)
class LossPair:
    """The generator and discriminator losses one GAN is trained with."""
    g_name: str
    d_name: str
    gp_weight: float = 0.0  # lambda of the gradient penalty; > 0 only for d_name == "wgan-gp"

    @property
    def g_fn(self) -> LossFn:
        return G_LOSSES[self.g_name]

    @property
    def d_fn(self) -> LossFn:
        return D_LOSSES[self.d_name]


def loss_pair(g_name: str, d_name: str = "", gp_weight: float = 10.0) -> LossPair:
    """Looks up a loss pair; ``d_name`` empty means the generator loss's partner.

    Raises:
      ValueError: an unknown name, with the names that exist.
    """
    if g_name not in G_LOSSES:
        raise ValueError(f"unknown generator loss {g_name!r}; choose one of {sorted(G_LOSSES)}")
    d_name = d_name or D_PARTNER[g_name]
    if d_name not in D_LOSSES:
        raise ValueError(f"unknown discriminator loss {d_name!r}; choose one of {sorted(D_LOSSES)}")
    return LossPair(g_name, d_name, gp_weight if d_name == "wgan-gp" else 0.0)
