"""TF-GAN's ``eval`` and ``losses`` subpackages, loaded without its package ``__init__``.

``import tensorflow_gan`` fails on TensorFlow >= 2.16 because the package
``__init__`` imports ``tf.estimator``, which was removed. The subpackages we use need
only TensorFlow, TensorFlow Probability and TensorFlow Hub, so we register empty
parent packages that point at the installed files and import the subpackages directly.

Usage::

    from tfgan_exp.evaluation.tfgan import tfgan_eval, tfgan_losses
    tfgan_eval.classifier_score_from_logits(logits)
"""
import importlib
import importlib.util
import os
import sys
import types

import tfgan_exp  # noqa: F401  (selects tf_keras before TensorFlow is imported)


def _register_parents():
    """Put stand-in ``tensorflow_gan`` and ``tensorflow_gan.python`` packages in sys.modules."""
    if "tensorflow_gan.python" in sys.modules:
        return
    spec = importlib.util.find_spec("tensorflow_gan")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tensorflow-gan is not installed: pip install -r requirements.txt")
    root = list(spec.submodule_search_locations)
    for name, path in (("tensorflow_gan", root),
                       ("tensorflow_gan.python", [os.path.join(root[0], "python")])):
        package = types.ModuleType(name)
        package.__path__ = path
        sys.modules.setdefault(name, package)


_register_parents()
tfgan_eval = importlib.import_module("tensorflow_gan.python.eval")
tfgan_losses = importlib.import_module("tensorflow_gan.python.losses.losses_impl")
# The module itself, for helpers its package does not export (trace_sqrt_product).
tfgan_classifier_metrics = importlib.import_module(
    "tensorflow_gan.python.eval.classifier_metrics")
