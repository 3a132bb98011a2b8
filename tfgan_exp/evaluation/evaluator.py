"""Scoring a set of images, the real images' cached features, and the per-epoch evaluator.

Metric names are prefixed by the classifier (``metric_key``). With Inception:
``inception_score``, ``inception_score_mean_10``, ``inception_score_std`` (std over 10
splits), and against the real images ``fid``, ``kid``, ``kid_std``, ``precision`` and
``recall``. With the digits classifier every name starts with ``digits_``
(``digits_score``, ..., ``digits_fid``, ``digits_kid``, ``digits_recall``).
"""
import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Callable, Dict, Optional

import numpy as np

from tfgan_exp import data, distribute
from tfgan_exp.config import UsageError
from tfgan_exp.evaluation import metrics
from tfgan_exp.replicated import ReplicatedMap
from tfgan_exp.rundir import written_atomically

# The distances to the real images, in the order they are reported.
DISTANCES = ("fid", "kid", "kid_std", "precision", "recall")
CACHE_VERSION = 2  # 2: whole features in random order, with k-NN radii (was: statistics)


def metric_key(classifier_name: str, metric: str) -> str:
    """The record key of ``metric`` ('score', 'score_mean_10', 'score_std', or one of
    DISTANCES) for classifier ``classifier_name``: Inception's distances keep the names
    papers use (``fid``, ``kid``...); every other name carries the classifier's prefix."""
    if metric in DISTANCES and classifier_name == "inception":
        return metric
    return f"{classifier_name}_{metric}"


@dataclasses.dataclass
class RealFeatures:
    """The real images' classifier features [N, D] (float32, random order) and each
    one's distance to its k-th nearest neighbour among them [N] (for precision)."""
    features: np.ndarray
    radii: np.ndarray


def summarise(name: str, logits: np.ndarray, features: np.ndarray,
              reference: Optional[RealFeatures]) -> Dict[str, float]:
    """The metric record for one scored set (see the module docstring for the names)."""
    mean_10, std_10 = metrics.split_scores(logits)
    record = {metric_key(name, "score"): metrics.classifier_score(logits),
              metric_key(name, "score_mean_10"): mean_10,
              metric_key(name, "score_std"): std_10}
    if reference is not None:
        kid, kid_std = metrics.kernel_distance(reference.features, features)
        precision, recall = metrics.precision_recall(reference.features, features,
                                                     reference.radii)
        values = {"fid": metrics.frechet_distance(reference.features, features),
                  "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall}
        record.update({metric_key(name, k): v for k, v in values.items()})
    return record


def real_features(classifier, images: np.ndarray, label: str, cache_dir: str,
                  num: int = 0, agree: Optional[Callable[[int], int]] = None) -> RealFeatures:
    """Classifier features of ``num`` real images (all if 0), cached on disk.

    The images are the first ``num`` of a fixed permutation, kept in that random order
    (KID's blocks assume it). The cache key hashes the classifier's fingerprint (its
    network and preprocessing), ``label`` (dataset and size), the count and the bytes of
    the images themselves, so different data, sizes, networks or preprocessing never
    share an entry. ``agree`` (``distribute.agreement``, given under multiworker and TPU)
    makes every worker check that all use the same classifier and compute together.
    """
    num = min(num or len(images), len(images))
    if agree is not None:
        # Real features from different classifiers would make the workers' FIDs differ.
        code = int(hashlib.sha256(classifier.fingerprint.encode()).hexdigest()[:6], 16)
        lowest, highest = distribute.spread(agree, code)  # code < 2**24: exact
        if lowest != highest:
            raise UsageError("the workers' classifiers differ (their cached weights or "
                             "Inception modules are not the same files): give every "
                             "worker the same --cache_dir and --inception_model")
    chosen = images[np.random.default_rng(0).permutation(len(images))[:num]]
    key_fields = {"version": CACHE_VERSION, "classifier": classifier.fingerprint,
                  "label": label, "num": num, "k": metrics.PR_NEIGHBOURS,
                  "images_sha256": hashlib.sha256(chosen.tobytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"features-{classifier.name}-{label}-{num}-{key}.npz")
    cached = _read_cached(path, key_fields)
    # Computing them runs collectives every worker must join: under multiworker, all
    # compute unless every worker found them (caches may be per worker, or racing).
    others_need_them = agree is not None and bool(agree(int(cached is None)))
    if cached is not None and not others_need_them:
        return cached
    # Converted to float a part at a time: 50,000 STL-10 images are 1.4 GB as float32.
    features = np.concatenate([classifier(data.to_float(part).numpy())[1]
                               for part in data.chunks(chosen, 5000)])
    if cached is not None:  # computed only to take part: this worker keeps its own
        return cached
    reference = RealFeatures(features.astype(np.float32), metrics.knn_radii(features))
    os.makedirs(cache_dir, exist_ok=True)
    with written_atomically(path, suffix=".npz") as temporary:
        np.savez(temporary, key_fields=json.dumps(key_fields, sort_keys=True),
                 **dataclasses.asdict(reference))
    return reference


def _read_cached(path: str, key_fields: dict) -> Optional[RealFeatures]:
    """The cached features at ``path`` if they are whole and for ``key_fields``, else None
    (a damaged file is computed again and replaced, never an error: under multiworker
    a worker that raised here would leave the others waiting)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as cached:
            if json.loads(str(cached["key_fields"])) != key_fields:
                return None
            return RealFeatures(cached["features"], cached["radii"])
    except (OSError, ValueError, KeyError, EOFError):
        return None


def score_images(classifier, images: np.ndarray,
                 reference: Optional[RealFeatures] = None) -> Dict[str, float]:
    """The metric record of float images [N, H, W, C] in [-1, 1]."""
    logits, features = classifier(images)
    return summarise(classifier.name, logits, features, reference)


@dataclasses.dataclass
class Scorer:
    """A classifier and the real images' features its distances compare against."""
    classifier: object
    reference: RealFeatures


class EvaluationAbandoned(Exception):
    """A stop was asked for during an evaluation, which was left unfinished."""


class EpochEvaluator:
    """Scores ``num_samples`` generated images against the real features.

    The noise is fixed for the run, so successive epochs are compared on the same z.
    Generation and classification run together on every replica of ``strategy``, a
    chunk at a time: memory stays bounded whatever ``num_samples`` is (50,000 images at
    299x299 would be 54 GB), and the images never leave the devices.
    """

    def __init__(self, scorer: Scorer, strategy, generator, num_samples: int,
                 latent_dim: int, seed: int):
        self.scorer = scorer
        classifier = scorer.classifier
        self.z = np.random.default_rng([seed, 0, 3]).standard_normal(
            (num_samples, latent_dim), dtype=np.float32)
        self._map = ReplicatedMap(
            strategy, lambda z: classifier.forward(generator(z, training=False)),
            classifier.chunk_size)

    def __call__(self, should_stop: Optional[Callable[[], bool]] = None) -> Dict[str, float]:
        """The metric record of this epoch's generator.

        ``should_stop`` is asked between chunks (one whole chunk across the replicas at a
        time) and before the metrics are computed; when it says True the evaluation is
        abandoned (EvaluationAbandoned), so that a stop signal never waits for it. Under
        a multi-worker strategy it must be a collective every worker calls alike
        (``ClusterStop.poll``): they then abandon at the same chunk, or none does.
        """
        start = time.perf_counter()
        if should_stop is None:
            logits, features = self._map(self.z)
        else:
            parts = []
            for part in data.chunks(self.z, self._map.chunk_size):
                if should_stop():
                    raise EvaluationAbandoned()
                parts.append(self._map(part))
            if should_stop():
                raise EvaluationAbandoned()
            logits, features = (np.concatenate(p) for p in zip(*parts))
        record = summarise(self.scorer.classifier.name, logits, features,
                           self.scorer.reference)
        record["eval_seconds"] = time.perf_counter() - start
        return record


def make_scorer(config, images: np.ndarray, strategy,
                agree: Optional[Callable[[int], int]] = None,
                chief: bool = True) -> Optional[Scorer]:
    """The classifier and real features ``config`` asks for, or None (no evaluation).
    ``agree``: the cluster-wide maximum (``distribute.agreement``), in a cluster, where
    ``chief`` says whether this worker is the chief.

    Loads (or trains) the classifier now, under ``strategy``, so that a model that cannot
    be had stops the run before training starts.
    """
    from tfgan_exp.evaluation.classifiers import (DigitsClassifier, InceptionClassifier,
                                                  default_cache_dir, ensure_digits_classifier)
    if config.eval_every == 0:
        return None
    cache_dir = config.cache_dir or default_cache_dir()
    if config.dataset == "digits":
        if agree is not None:
            # The chief trains it first, the others then load its file from a shared
            # cache: trained by each at once, they would differ (training is not
            # bit-reproducible across processes) and refuse to evaluate together.
            failed = 0
            if chief:
                try:
                    ensure_digits_classifier(cache_dir)
                except Exception:
                    failed = 1
                    raise
                finally:
                    agree(failed)  # the others wait here; a failure stops them too
            elif agree(0):
                raise UsageError("the chief could not train the digits classifier; "
                                 "see its output")
        classifier = DigitsClassifier(cache_dir, strategy)
        print(f"digits classifier: held-out accuracy {classifier.held_out_accuracy:.1%}; "
              f"real digits score {classifier.real_digits_score:.3f} (of at most 10)",
              file=sys.stderr)
    elif config.inception_model == "none":
        return None
    else:
        classifier = InceptionClassifier(config.inception_model, strategy)
    reference = real_features(classifier, images, f"{config.dataset}-{config.image_size}px",
                              cache_dir, config.eval_samples, agree)
    return Scorer(classifier, reference)
