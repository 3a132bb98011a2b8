"""Inception Score and Fréchet distance with TF-GAN's definitions, from logits and features.

Both metrics run in float64, as TF-GAN does. Features enter FID as streaming statistics
(``FeatureStats``: mean and unbiased covariance), so that any number of images can be
scored in bounded memory and the real images' statistics can be cached on disk.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tfgan_exp.tfgan import tfgan_classifier_metrics, tfgan_eval

SPLITS = 10  # papers report the mean and std of the score over 10 splits


def classifier_score(logits: np.ndarray) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))) over all of ``logits`` [N, classes] (TF-GAN)."""
    return float(tfgan_eval.classifier_score_from_logits(
        tf.constant(np.asarray(logits, np.float64))).numpy())


def split_scores(logits: np.ndarray, splits: int = SPLITS):
    """(mean, std) of the score over ``splits`` equal consecutive parts, as in papers."""
    logits = np.asarray(logits)
    if len(logits) < splits:
        raise ValueError(f"need at least {splits} images for {splits} splits, got {len(logits)}")
    parts = np.array_split(logits[:len(logits) // splits * splits], splits)
    scores = [classifier_score(part) for part in parts]
    return float(np.mean(scores)), float(np.std(scores))


@dataclasses.dataclass
class FeatureStats:
    """Running sums of features [N, D] in float64: count, sum and sum of outer products."""
    count: int = 0
    total: np.ndarray = None
    outer: np.ndarray = None

    def update(self, features) -> None:
        x = np.asarray(features, np.float64).reshape(len(features), -1)
        if self.total is None:
            self.total = np.zeros(x.shape[1])
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        self.count += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased (divided by N - 1), as TF-GAN's FID uses."""
        mean = self.mean
        return (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)

    def to_arrays(self) -> dict:
        return {"count": np.array(self.count), "total": self.total, "outer": self.outer}

    @classmethod
    def from_arrays(cls, arrays) -> "FeatureStats":
        return cls(int(arrays["count"]), np.array(arrays["total"]), np.array(arrays["outer"]))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """|m_a - m_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)), TF-GAN's formula and matrix root."""
    sigma_a = tf.constant(a.covariance)
    sigma_b = tf.constant(b.covariance)
    sqrt_trace = tfgan_classifier_metrics.trace_sqrt_product(sigma_a, sigma_b)
    trace = tf.linalg.trace(sigma_a + sigma_b) - 2.0 * sqrt_trace
    mean = np.sum(np.square(a.mean - b.mean))
    return float(trace.numpy() + mean)
