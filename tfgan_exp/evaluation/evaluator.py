"""Scoring a set of images, the real images' cached features, and the per-epoch evaluator.

Metric names are prefixed by the classifier (``metric_key``). With Inception:
``inception_score``, ``inception_score_mean_10``, ``inception_score_std`` (std over 10
splits), and against the real images ``fid``, ``kid``, ``kid_std``, ``precision`` and
``recall``. With the digits classifier every name starts with ``digits_``
(``digits_score``, ..., ``digits_fid``, ``digits_kid``, ``digits_recall``), and two more
measure mode collapse: ``digits_classes`` (of the 10 digits, how many the generator
covers) and ``digits_class_kl``.
"""
import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from tfgan_exp import data
from tfgan_exp.runtime import distribute
from tfgan_exp.config import UsageError
from tfgan_exp.evaluation import metrics
from tfgan_exp.runtime.replicated import ReplicatedMap
from tfgan_exp.rundir import written_atomically

# The distances to the real images, in the order they are reported.
DISTANCES = ("fid", "kid", "kid_std", "precision", "recall")
CACHE_VERSION = 3  # 3: a held-out real set and its anchor, the real class counts


def metric_key(classifier_name: str, metric: str) -> str:
    """The record key of ``metric`` ('score', 'score_mean_10', 'score_std', 'classes',
    'class_kl', or one of DISTANCES) for classifier ``classifier_name``: Inception's
    distances keep the names papers use (``fid``, ``kid``...); every other name carries
    the classifier's prefix."""
    if metric in DISTANCES and classifier_name == "inception":
        return metric
    return f"{classifier_name}_{metric}"


@dataclasses.dataclass
class RealFeatures:
    """The real images that generated ones are compared with.

    ``features`` [R, D] float32 in random order, each one's distance to its k-th
    nearest neighbour among them ``radii`` [R] (for precision), the classes the
    classifier predicts for them ``class_counts`` [C] (for classifiers whose classes
    are the data's modes, else None), and ``anchor``: the metric record of R other,
    held-out, real images against these (what a perfect generator would get at this
    size), or None.
    """
    features: np.ndarray
    radii: np.ndarray
    class_counts: Optional[np.ndarray] = None
    anchor: Optional[Dict[str, float]] = None


def summarise(name: str, logits: np.ndarray, features: np.ndarray,
              reference: Optional[RealFeatures]) -> Dict[str, float]:
    """The metric record for one scored set (see the module docstring for the names).

    The score uses every image; the distances use the first R (as many as the real
    reference holds), since precision, recall and KID depend on the two sizes.
    """
    mean_10, std_10 = metrics.split_scores(logits)
    record = {metric_key(name, "score"): metrics.classifier_score(logits),
              metric_key(name, "score_mean_10"): mean_10,
              metric_key(name, "score_std"): std_10}
    if reference is not None:
        compared = features[:len(reference.features)]
        kid, kid_std = metrics.kernel_distance(reference.features, compared)
        precision, recall = metrics.precision_recall(reference.features, compared,
                                                     reference.radii)
        values = {"fid": metrics.frechet_distance(reference.features, compared),
                  "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall}
        if reference.class_counts is not None:
            values["classes"], values["class_kl"] = metrics.class_coverage(
                logits, reference.class_counts)
        record.update({metric_key(name, k): v for k, v in values.items()})
    return record


def real_features(classifier, images: np.ndarray, label: str, cache_dir: str,
                  num: int = 0, agree: Optional[Callable[[int], int]] = None,
                  held_out: bool = False) -> RealFeatures:
    """Classifier features of ``num`` real images (all if 0), cached on disk.

    The images are the first of a fixed permutation, kept in that random order (KID's
    blocks assume it). With ``held_out`` at most half the images are used, and as many
    of the rest are scored against them for the anchor (``RealFeatures.anchor``). The
    cache key hashes the classifier's fingerprint (its network and preprocessing),
    ``label`` (dataset and size), the counts and the bytes of the images themselves, so
    different data, sizes, networks or preprocessing never share an entry. ``agree``
    (``distribute.agreement``, given under multiworker and TPU) makes every worker
    check that all use the same classifier and compute together.
    """
    limit = len(images) // 2 if held_out else len(images)
    num = min(num or limit, limit)
    if agree is not None:
        # Real features from different classifiers would make the workers' FIDs differ.
        code = int(hashlib.sha256(classifier.fingerprint.encode()).hexdigest()[:6], 16)
        lowest, highest = distribute.spread(agree, code)  # code < 2**24: exact
        if lowest != highest:
            raise UsageError("the workers' classifiers differ (their cached weights or "
                             "Inception modules are not the same files): give every "
                             "worker the same --cache_dir and --inception_model")
    order = np.random.default_rng(0).permutation(len(images))
    chosen = images[order[:num]]
    held = images[order[num:2 * num]] if held_out else chosen[:0]
    key_fields = {"version": CACHE_VERSION, "classifier": classifier.fingerprint,
                  "label": label, "num": num, "held_out": len(held),
                  "k": metrics.PR_NEIGHBOURS,
                  "images_sha256": hashlib.sha256(chosen.tobytes() + held.tobytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"features-{classifier.name}-{label}-{num}-{key}.npz")
    cached = _read_cached(path, key_fields)
    # Computing them runs collectives every worker must join: under multiworker, all
    # compute unless every worker found them (caches may be per worker, or racing).
    others_need_them = agree is not None and bool(agree(int(cached is None)))
    if cached is not None and not others_need_them:
        return cached
    logits, features = _classify(classifier, chosen)
    if cached is not None:  # computed only to take part: this worker keeps its own
        if len(held):
            _classify(classifier, held)
        return cached
    reference = reference_of(classifier, logits, features)
    counts = reference.class_counts
    if len(held):
        reference.anchor = summarise(classifier.name, *_classify(classifier, held), reference)
    os.makedirs(cache_dir, exist_ok=True)
    with written_atomically(path, suffix=".npz") as temporary:
        np.savez(temporary, key_fields=json.dumps(key_fields, sort_keys=True),
                 features=reference.features, radii=reference.radii,
                 class_counts=np.array([] if counts is None else counts),
                 anchor=json.dumps(reference.anchor))
    return reference


def reference_of(classifier, logits: np.ndarray, features: np.ndarray) -> RealFeatures:
    """The reference made of real images' ``logits`` [R, C] and ``features`` [R, D]."""
    counts = (np.bincount(np.argmax(logits, axis=1), minlength=logits.shape[1])
              if classifier.classes_are_modes else None)
    return RealFeatures(np.asarray(features, np.float32), metrics.knn_radii(features), counts)


def _classify(classifier, images: np.ndarray):
    """(logits, features) of uint8 ``images``, converted to float a part at a time:
    50,000 STL-10 images are 1.4 GB as float32."""
    parts = [classifier(data.to_float(part).numpy()) for part in data.chunks(images, 5000)]
    return tuple(np.concatenate(outputs) for outputs in zip(*parts))


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
            counts = cached["class_counts"]
            return RealFeatures(cached["features"], cached["radii"],
                                counts if len(counts) else None,
                                json.loads(str(cached["anchor"])))
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

    def describe(self, num_generated: int) -> dict:
        """What a run's metrics are measured against (the run folder's reference.json):
        the set sizes (precision, recall and KID depend on them) and the anchor."""
        compared = min(num_generated, len(self.reference.features))
        return {"classifier": self.classifier.name, "num_generated": num_generated,
                "num_compared": compared, "num_reference": len(self.reference.features),
                "anchor": self.reference.anchor}


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
    be had stops the run before training starts. A process that trains several runs (a
    slot of a --parallel grid) keeps the last scorer it made on the default strategy and
    gives it to the next run that asks for the same one: the classifier and the real
    features are the same files either way, read once.
    """
    key = (config.dataset, config.image_size, config.data_dir, config.cache_dir,
           config.eval_samples, config.inception_model, config.eval_every == 0)
    reusable = agree is None and strategy is tf.distribute.get_strategy()
    if reusable and _last_scorer and _last_scorer[0] == key:
        return _last_scorer[1]
    scorer = _make_scorer(config, images, strategy, agree, chief)
    _last_scorer.clear()
    if reusable:
        _last_scorer.extend([key, scorer])
    return scorer


_last_scorer: list = []  # [key, Scorer] of the last reusable scorer this process made


def _make_scorer(config, images: np.ndarray, strategy, agree, chief) -> Optional[Scorer]:
    """``make_scorer`` without its reuse."""
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
                              cache_dir, config.eval_samples, agree, held_out=True)
    return Scorer(classifier, reference)
