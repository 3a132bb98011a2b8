"""Scoring a set of images, the real images' cached statistics, and the per-epoch evaluator.

Metric names are prefixed by the classifier: ``inception_score``, ``inception_score_mean_10``,
``inception_score_std`` (std over 10 splits) and ``fid`` with Inception;
``digits_score``, ``digits_score_mean_10``, ``digits_score_std`` and ``digits_fid`` with
the digits classifier.
"""
import hashlib
import json
import os
import time
from typing import Dict, Iterable, Optional

import numpy as np

from tfgan_exp import data, scores
from tfgan_exp.rundir import written_atomically
from tfgan_exp.scores import FeatureStats


def classify(classifier, batches: Iterable[np.ndarray]):
    """Runs float images in [-1, 1], batch by batch; returns (all logits, FeatureStats)."""
    logits, stats = [], FeatureStats()
    for images in batches:
        batch_logits, features = classifier(images)
        logits.append(batch_logits)
        stats.update(features)
    return np.concatenate(logits), stats


def fid_key(name: str) -> str:
    """The record key of the Fréchet distance for classifier ``name``."""
    return "fid" if name == "inception" else f"{name}_fid"


def summarise(name: str, logits: np.ndarray, stats: FeatureStats,
              reference: Optional[FeatureStats]) -> Dict[str, float]:
    """The metric record for one scored set (see the module docstring for the names)."""
    mean_10, std_10 = scores.split_scores(logits)
    record = {f"{name}_score": scores.classifier_score(logits),
              f"{name}_score_mean_10": mean_10, f"{name}_score_std": std_10}
    if reference is not None:
        record[fid_key(name)] = scores.frechet_distance(
            reference, stats)
    return record


def float_batches(images_uint8: np.ndarray, size: int = 500):
    """uint8 images, chunk by chunk, as float32 in [-1, 1]."""
    for chunk in data.chunks(images_uint8, size):
        yield data.to_float(chunk).numpy()


def real_stats(classifier, images: np.ndarray, label: str, cache_dir: str,
               num: int = 0) -> FeatureStats:
    """Feature statistics of ``num`` real images (all if 0), cached on disk.

    The images are the first ``num`` of a fixed permutation. The cache key hashes the
    classifier's fingerprint, ``label`` (dataset and size), the count and the bytes of
    the images themselves, so different data, sizes or networks never share an entry.
    """
    num = min(num or len(images), len(images))
    chosen = images[np.sort(np.random.default_rng(0).permutation(len(images))[:num])]
    key_fields = {"classifier": classifier.fingerprint, "label": label, "num": num,
                  "images_sha256": hashlib.sha256(chosen.tobytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"stats-{classifier.name}-{label}-{num}-{key}.npz")
    if os.path.exists(path):
        with np.load(path) as cached:
            if json.loads(str(cached["key_fields"])) == key_fields:
                return FeatureStats.from_arrays(cached)
    _, stats = classify(classifier, float_batches(chosen))
    os.makedirs(cache_dir, exist_ok=True)
    with written_atomically(path, suffix=".npz") as temporary:
        np.savez(temporary, key_fields=json.dumps(key_fields, sort_keys=True),
                 **stats.to_arrays())
    return stats


class EpochEvaluator:
    """Scores ``num_samples`` generated images against the real statistics.

    The noise is fixed for the run, so successive epochs are compared on the same z.
    Generation and classification go ``chunk_size`` images at a time: memory stays
    bounded whatever ``num_samples`` is (50,000 images at 299x299 would be 54 GB).
    """

    def __init__(self, classifier, reference: FeatureStats, num_samples: int,
                 latent_dim: int, seed: int, chunk_size: int = 500):
        self.classifier = classifier
        self.reference = reference
        self.chunk_size = chunk_size
        self.z = np.random.default_rng([seed, 0, 3]).standard_normal(
            (num_samples, latent_dim), dtype=np.float32)

    def __call__(self, sampler) -> Dict[str, float]:
        start = time.perf_counter()
        generated = (sampler(z) for z in data.chunks(self.z, self.chunk_size))
        logits, stats = classify(self.classifier, generated)
        record = summarise(self.classifier.name, logits, stats, self.reference)
        record["eval_seconds"] = time.perf_counter() - start
        return record


def make_evaluators(config, images: np.ndarray):
    """The per-epoch evaluators ``config`` asks for; loads (or trains) the classifier now,
    so that a model that cannot be had stops the run before training starts."""
    from tfgan_exp.classifiers import DigitsClassifier, InceptionClassifier, default_cache_dir
    if config.eval_every == 0:
        return []
    cache_dir = config.cache_dir or default_cache_dir()
    if config.dataset == "digits":
        classifier = DigitsClassifier(cache_dir)
    elif config.inception_model == "none":
        return []
    else:
        classifier = InceptionClassifier(config.inception_model)
    reference = real_stats(classifier, images, f"{config.dataset}-{config.image_size}px",
                           cache_dir, config.eval_samples)
    return [EpochEvaluator(classifier, reference, config.eval_samples, config.latent_dim,
                           config.seed)]
