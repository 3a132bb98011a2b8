"""The GAN itself: what is trained, independent of how and where.

- ``networks``: the SN-GAN standard CNN generator and discriminator, sized from the images.
- ``spectral_norm``: Miyato et al.'s spectral normalisation, float32 in every precision.
- ``losses``: per-example losses, the registry of loss pairs, the gradient penalty.
- ``model``: ``GAN``, a ``tf.keras.Model`` whose ``train_step`` takes one loss pair.

Imports only ``tfgan_exp.config`` and ``tfgan_exp.data`` from this project.
"""
