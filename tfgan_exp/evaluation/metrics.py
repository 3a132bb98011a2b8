"""Sample-quality metrics from a classifier's logits and features, TF-GAN's definitions.

Every function takes numpy arrays and returns Python floats:

- ``classifier_score`` (Inception Score): exp(E_x KL(p(y|x) || p(y))) from logits [N, C].
- ``frechet_distance`` (FID): |m_r - m_g|^2 + Tr(C_r + C_g - 2 (C_r C_g)^(1/2)) between
  features [N, D] and [M, D], unbiased covariances.
- ``kernel_distance`` (KID, Binkowski et al. 2018): the unbiased MMD^2 with the cubic
  polynomial kernel k(x, y) = (x.y / D + 1)^3, TF-GAN's value at every size, and its
  standard error.
- ``precision_recall`` (Kynkaenniemi et al. 2019): the share of generated features
  inside the real features' k-nearest-neighbour manifold (precision: fidelity), and of
  real features inside the generated one (recall: coverage; a collapsed generator has
  low recall even when its few modes look real).
- ``class_coverage``: for the digits, the classes a generator covers and the KL
  divergence of its class histogram from the real one (stacked-MNIST's mode count).

IS, FID and KID are TF-GAN's own functions, run in float64. Precision and recall are
not in TF-GAN; they use scikit-learn's nearest neighbours and chunked distances; the KL
divergence is scipy's.
"""
from typing import Tuple

import numpy as np
import tensorflow as tf

from tfgan_exp.config import SPLITS

KID_MAX_BLOCK = 1024  # TF-GAN's default block size for KID
KID_SE_BLOCKS = 10  # blocks for KID's standard error where TF-GAN's default has one
COVERED_SHARE = 0.1  # a class is covered at a tenth of its real share (class_coverage)
PR_NEIGHBOURS = 3  # k of Kynkaenniemi et al.'s k-NN manifolds


def _tfgan_eval():
    """TF-GAN's eval package, imported at the first evaluation: with TensorFlow
    Probability and scipy it adds 1.5 s to a process's start, which a run that never
    evaluates (--eval_every=0) need not pay."""
    from tfgan_exp.evaluation.tfgan import tfgan_eval
    return tfgan_eval


def _scipy_stats():
    import scipy.stats  # (see _tfgan_eval)
    return scipy.stats


def classifier_score(logits: np.ndarray) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))) over all of ``logits`` [N, classes] (TF-GAN)."""
    return float(_tfgan_eval().classifier_score_from_logits(
        tf.constant(np.asarray(logits, np.float64))).numpy())


def split_scores(logits: np.ndarray, splits: int = SPLITS) -> Tuple[float, float]:
    """(mean, std) of the score over ``splits`` equal consecutive parts, as in papers."""
    logits = np.asarray(logits)
    if len(logits) < splits:
        raise ValueError(f"need at least {splits} images for {splits} splits, got {len(logits)}")
    parts = np.array_split(logits[:len(logits) // splits * splits], splits)
    scores = [classifier_score(part) for part in parts]
    return float(np.mean(scores)), float(np.std(scores))


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """FID between features [N, D] and [M, D] (TF-GAN's formula and matrix root)."""
    return float(_tfgan_eval().frechet_classifier_distance_from_activations(
        tf.constant(np.asarray(real, np.float64)),
        tf.constant(np.asarray(generated, np.float64))).numpy())


def kernel_distance(real: np.ndarray, generated: np.ndarray) -> Tuple[float, float]:
    """(KID, its standard error) between features [N, D] and [M, D].

    KID is TF-GAN's estimator with its default blocks of at most 1,024 features, so it
    equals TF-GAN's ``kernel_classifier_distance_from_activations`` at every size. Its
    standard error is TF-GAN's (the spread of the block estimates) where there are
    several blocks; with one block (up to 1,024 features), where TF-GAN has none, it is
    the standard error of the mean over KID_SE_BLOCKS blocks of the same features,
    which estimates the one-block value's: an unbiased MMD^2's variance shrinks as
    1 / size (faster when both sets come from one distribution, where this is
    conservative). Both sets must be in random order (each block is a sample).
    """
    kid, std = _tfgan_kid(real, generated, KID_MAX_BLOCK)
    if not np.isfinite(std):
        largest = max(len(real), len(generated))
        _, std = _tfgan_kid(real, generated, -(-largest // KID_SE_BLOCKS))
    return kid, std


def _tfgan_kid(real, generated, block: int) -> Tuple[float, float]:
    logger = tf.get_logger()  # TF-GAN's call warns that an argument is deprecated
    level = logger.level
    logger.setLevel("ERROR")
    try:
        kid, std = _tfgan_eval().kernel_classifier_distance_and_std_from_activations(
            tf.constant(np.asarray(real, np.float64)),
            tf.constant(np.asarray(generated, np.float64)), max_block_size=block)
    finally:
        logger.setLevel(level)
    return float(kid.numpy()), float(std.numpy())


def class_coverage(logits: np.ndarray, real_counts: np.ndarray) -> Tuple[int, float]:
    """(classes covered, KL divergence) of generated images' predicted classes.

    The stacked-MNIST measure of mode collapse (Metz et al. 2017, Srivastava et al.
    2017), for a classifier whose classes are the data's modes (digits): ``logits``
    [N, C] of generated images, ``real_counts`` [C] the classes the same classifier
    predicts for real images. A class is covered when it has at least COVERED_SHARE of
    its real share among the generated images (a tenth: far above what the
    classifier's errors alone put there, far below what a generator that makes the
    class does); the KL divergence KL(generated || real) of the two class histograms,
    in nats, is 0 for the real proportions and log 10 = 2.30 for a single digit.
    """
    counts = np.bincount(np.argmax(logits, axis=1), minlength=len(real_counts))
    share = counts / counts.sum()
    real_share = np.asarray(real_counts, np.float64) / np.sum(real_counts)
    covered = int(np.sum((real_share > 0) & (share >= COVERED_SHARE * real_share)))
    return covered, float(_scipy_stats().entropy(share, real_share))


def knn_radii(features: np.ndarray, k: int = PR_NEIGHBOURS) -> np.ndarray:
    """float [N]: each feature's distance to its k-th nearest other feature."""
    from sklearn.neighbors import NearestNeighbors
    features = np.asarray(features, np.float32)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return distances[:, k]  # column 0 is the feature itself


def _share_inside(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """The share of ``queries`` within radii[j] of some centres[j] (bounded memory)."""
    from sklearn.metrics import pairwise_distances_chunked
    inside = pairwise_distances_chunked(
        np.asarray(queries, np.float32), np.asarray(centres, np.float32),
        reduce_func=lambda chunk, start: (chunk <= radii[None, :]).any(axis=1))
    return float(np.mean(np.concatenate(list(inside))))


def precision_recall(real: np.ndarray, generated: np.ndarray, real_radii=None,
                     k: int = PR_NEIGHBOURS) -> Tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of features [M, D]
    against real features [N, D]; both in [0, 1].

    ``real_radii`` (from ``knn_radii(real, k)``) may be given to skip recomputing them.
    """
    if real_radii is None:
        real_radii = knn_radii(real, k)
    precision = _share_inside(generated, real, real_radii)
    recall = _share_inside(real, generated, knn_radii(generated, k))
    return precision, recall
