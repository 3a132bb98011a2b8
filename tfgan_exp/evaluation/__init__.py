"""Evaluation, in one place: the networks that score images, the metrics, and the
per-epoch evaluator.

- ``metrics``: IS, FID, KID, precision and recall from logits and features (the maths;
  TF-GAN's definitions where TF-GAN has them).
- ``classifiers``: TF-GAN's Inception module and the offline digits classifier, each
  run on every replica of a strategy.
- ``evaluator``: the real images' features (cached), scoring a set of images, and the
  evaluator training calls at the end of an epoch.

The command ``python -m tfgan_exp.score`` scores image files with these.
"""
