"""Sample-quality metrics from a classifier's logits and features, TF-GAN's definitions.

Every function takes numpy arrays and returns Python floats:

- ``classifier_score`` (Inception Score): exp(E_x KL(p(y|x) || p(y))) from logits [N, C].
- ``frechet_distance`` (FID): |m_r - m_g|^2 + Tr(C_r + C_g - 2 (C_r C_g)^(1/2)) between
  features [N, D] and [M, D], unbiased covariances.
- ``kernel_distance`` (KID, Binkowski et al. 2018): the unbiased MMD^2 with the cubic
  polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over blocks, and its standard
  error.
- ``precision_recall`` (Kynkaenniemi et al. 2019): the share of generated features
  inside the real features' k-nearest-neighbour manifold (precision: fidelity), and of
  real features inside the generated one (recall: coverage; a collapsed generator has
  low recall even when its few modes look real).

IS, FID and KID are TF-GAN's own functions, run in float64. Precision and recall are
not in TF-GAN; they use scikit-learn's nearest neighbours and chunked distances.
"""
from typing import Tuple

import numpy as np
import tensorflow as tf

from tfgan_exp.config import SPLITS
from tfgan_exp.tfgan import tfgan_eval

KID_MAX_BLOCK = 1024  # TF-GAN's default block size for KID
PR_NEIGHBOURS = 3  # k of Kynkaenniemi et al.'s k-NN manifolds


def classifier_score(logits: np.ndarray) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))) over all of ``logits`` [N, classes] (TF-GAN)."""
    return float(tfgan_eval.classifier_score_from_logits(
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
    return float(tfgan_eval.frechet_classifier_distance_from_activations(
        tf.constant(np.asarray(real, np.float64)),
        tf.constant(np.asarray(generated, np.float64))).numpy())


def kernel_distance(real: np.ndarray, generated: np.ndarray) -> Tuple[float, float]:
    """(KID, its standard error) between features [N, D] and [M, D] (TF-GAN).

    Blocks hold at most 1,024 features each (TF-GAN's default) and there are at least
    two, so that the standard error, estimated from the spread of the blocks, exists.
    Both sets must be in random order (each block is a sample).
    """
    largest = max(len(real), len(generated))
    block = min(KID_MAX_BLOCK, -(-largest // 2))
    logger = tf.get_logger()  # TF-GAN's call warns that an argument is deprecated
    level = logger.level
    logger.setLevel("ERROR")
    try:
        kid, std = tfgan_eval.kernel_classifier_distance_and_std_from_activations(
            tf.constant(np.asarray(real, np.float64)),
            tf.constant(np.asarray(generated, np.float64)), max_block_size=block)
    finally:
        logger.setLevel(level)
    return float(kid.numpy()), float(std.numpy())


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
