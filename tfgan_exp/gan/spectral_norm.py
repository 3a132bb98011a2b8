"""Spectral normalisation as Miyato et al. 2018 define it, for D's convolutions and dense layer.

The trained variable is the kernel W; the forward pass uses W / sigma(W), where sigma
is W's largest singular value, estimated by one power iteration per training call from a
vector u kept between calls (and in checkpoints). Gradients flow through sigma, as in
the paper (its eq. 12): the normalisation is part of the function D computes.

Keras's own ``SpectralNormalization`` is not this, and is not used: it overwrites W
with W / sigma (a projection, with no gradient through sigma), and under a mixed
precision policy it writes the autocast (bfloat16 or float16) kernel back into the
float32 variable, so that small updates are rounded away. Here W is never written but
by the optimizer; the kernel and u stay float32 under every policy, sigma is computed
in float32, and only the normalised kernel is cast to the layer's compute dtype.

Matrix view: a kernel of shape [..., out] is reshaped to w = [in, out] (the transpose
of the paper's W, in = the product of the other dimensions). One power iteration from
u [1, out]: v = normalise(u w^T) [1, in], u' = normalise(v w) [1, out], and
sigma = v w u'^T, with u and v held constant for the gradient.
"""
import tensorflow as tf

layers = tf.keras.layers


def _normalise(x):
    return x / tf.sqrt(tf.reduce_sum(tf.square(x)) + 1e-12)


class SpectralNormMixin:
    """Spectral normalisation for a Keras layer whose weight is ``self.kernel``."""

    def add_weight(self, name=None, *args, **kwargs):
        if name == "kernel":
            # A plain float32 variable under any policy: read in float32 for sigma, cast
            # once for the layer's computation, never rounded in storage.
            kwargs["experimental_autocast"] = False
        return super().add_weight(name, *args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self.sn_u = self.add_weight(
            name="sn_u", shape=(1, self.kernel.shape[-1]),
            initializer=tf.keras.initializers.RandomNormal(0.0, 1.0), trainable=False,
            dtype=tf.float32, experimental_autocast=False,
            # Each replica computes the same u from the same W; reading averages them.
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.MEAN)

    def spectral_norm(self, training: bool = False):
        """(sigma, W [in, out] float32). A training call first advances u by one step."""
        w = tf.reshape(tf.convert_to_tensor(self.kernel), [-1, self.kernel.shape[-1]])
        u = tf.stop_gradient(tf.convert_to_tensor(self.sn_u))
        v = tf.stop_gradient(_normalise(tf.matmul(u, w, transpose_b=True)))  # [1, in]
        u = tf.stop_gradient(_normalise(tf.matmul(v, w)))  # [1, out]
        if training:
            self.sn_u.assign(u)
        sigma = tf.squeeze(tf.matmul(tf.matmul(v, w), u, transpose_b=True))
        return sigma, w

    def normalised_kernel(self, training: bool = False):
        """W / sigma(W), in the kernel's own shape, cast to the compute dtype."""
        sigma, _ = self.spectral_norm(training)
        kernel = tf.convert_to_tensor(self.kernel) / sigma
        return tf.cast(kernel, self.compute_dtype)

    def call(self, inputs, training=None):
        outputs = self.apply_kernel(inputs, self.normalised_kernel(bool(training)))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs


class SNConv2D(SpectralNormMixin, layers.Conv2D):
    """Conv2D whose kernel is divided by its spectral norm in every forward pass."""

    def apply_kernel(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)


class SNDense(SpectralNormMixin, layers.Dense):
    """Dense (on [batch, features] inputs) whose kernel is divided by its spectral norm."""

    def apply_kernel(self, inputs, kernel):
        return tf.matmul(inputs, kernel)
