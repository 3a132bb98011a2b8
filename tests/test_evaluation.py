"""IS and FID: TF-GAN's definitions equal an independent numpy computation; the cache."""
import glob
import os

import numpy as np
import pytest
import scipy.linalg

from tfgan_exp import data, evaluation, scores
from tfgan_exp.classifiers import DigitsClassifier, InceptionClassifier
from tfgan_exp.config import UsageError
from tfgan_exp.tfgan import tfgan_eval


def numpy_is(logits):
    logits = np.asarray(logits, np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    py = p.mean(0)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1))))


def numpy_fid(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb - 2 * root))


def stats_of(x):
    s = scores.FeatureStats()
    s.update(x)
    return s


def test_score_equals_numpy_definition():
    logits = np.random.default_rng(1).normal(0, 3, (500, 1008)).astype(np.float32)
    assert scores.classifier_score(logits) == pytest.approx(numpy_is(logits), rel=1e-9)


def test_constant_logits_score_one_and_k_confident_classes_score_k():
    assert scores.classifier_score(np.ones((100, 1008))) == pytest.approx(1.0)
    k = 7
    confident = np.full((700, 1008), -30.0)
    confident[np.arange(700), np.arange(700) % k] = 30.0
    assert scores.classifier_score(confident) == pytest.approx(k, rel=1e-6)
    assert scores.split_scores(confident) == pytest.approx((k, 0.0), abs=1e-5)


def test_split_scores_need_ten_images():
    with pytest.raises(ValueError, match="at least 10"):
        scores.split_scores(np.zeros((9, 10)))


def test_fid_equals_numpy_and_tfgan_and_is_zero_against_itself():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (400, 16))
    b = rng.normal(0.5, 1.5, (300, 16))
    fid = scores.frechet_distance(stats_of(a), stats_of(b))
    assert fid == pytest.approx(numpy_fid(a, b), rel=1e-6)
    tfgan = float(tfgan_eval.frechet_classifier_distance_from_activations(a, b).numpy())
    assert fid == pytest.approx(tfgan, rel=1e-6)
    assert scores.frechet_distance(stats_of(a), stats_of(a)) == pytest.approx(0, abs=1e-6)


def test_streaming_stats_equal_one_shot():
    x = np.random.default_rng(3).normal(0, 1, (250, 8))
    chunked = scores.FeatureStats()
    for part in np.array_split(x, 7):
        chunked.update(part)
    np.testing.assert_allclose(chunked.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(chunked.covariance, np.cov(x, rowvar=False), atol=1e-12)


def test_inception_classifier_chunks_equal_one_pass(fake_inception_dir):
    images = np.random.default_rng(4).uniform(-1, 1, (23, 32, 32, 3)).astype(np.float32)
    one_pass = InceptionClassifier(fake_inception_dir, chunk_size=100)(images)
    chunked = InceptionClassifier(fake_inception_dir, chunk_size=5)(images)
    assert one_pass[0].shape == (23, 1008) and one_pass[1].shape == (23, 2048)
    np.testing.assert_allclose(chunked[0], one_pass[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chunked[1], one_pass[1], rtol=1e-5, atol=1e-5)


def test_a_missing_inception_model_says_how_to_get_one(tmp_path):
    with pytest.raises(UsageError, match="(?s)no SavedModel there.*hub.resolve"):
        InceptionClassifier(str(tmp_path / "nowhere"))


def test_real_stats_are_cached_and_keyed(fake_inception_dir, tmp_path):
    classifier = InceptionClassifier(fake_inception_dir)
    images = np.random.default_rng(5).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    first = evaluation.real_stats(classifier, images, "fake-32px", str(tmp_path), 30)
    files = glob.glob(str(tmp_path / "stats-*.npz"))
    assert len(files) == 1 and first.count == 30
    mtime = os.path.getmtime(files[0])
    again = evaluation.real_stats(classifier, images, "fake-32px", str(tmp_path), 30)
    assert os.path.getmtime(files[0]) == mtime  # read back, not recomputed
    np.testing.assert_array_equal(again.outer, first.outer)
    # Another count, another label or other images: a new entry each, never a mix-up.
    evaluation.real_stats(classifier, images, "fake-32px", str(tmp_path), 20)
    evaluation.real_stats(classifier, images, "other-32px", str(tmp_path), 30)
    other = evaluation.real_stats(classifier, 255 - images, "fake-32px", str(tmp_path), 30)
    assert len(glob.glob(str(tmp_path / "stats-*.npz"))) == 4
    assert not np.allclose(other.total, first.total)


def test_digits_classifier_is_accurate_and_real_digits_score_high(cache_dir):
    classifier = DigitsClassifier(cache_dir)
    assert classifier.held_out_accuracy >= 0.97
    real = data.load_images("digits", 16)
    logits, stats = evaluation.classify(classifier, evaluation.float_batches(real))
    assert scores.classifier_score(logits) > 9.5
    # Zero up to the matrix square root's error (distances between sets are ~10..1000).
    assert scores.frechet_distance(stats, stats) == pytest.approx(0, abs=1e-4)
    assert glob.glob(os.path.join(cache_dir, "digits_classifier_v*.weights.h5"))


class ReplaySampler:
    """Stands in for training.Sampler: 'generates' the given images in order, one per z."""

    def __init__(self, images):
        self.images, self.used = images, 0

    def __call__(self, z):
        self.used += len(z)
        return self.images[self.used - len(z):self.used]


def test_epoch_evaluator_scores_in_chunks(cache_dir):
    classifier = DigitsClassifier(cache_dir)
    real = data.load_images("digits", 16)
    reference = evaluation.real_stats(classifier, real, "digits-16px", cache_dir, 500)
    fake = data.to_float(real[:500]).numpy()
    record = evaluation.EpochEvaluator(classifier, reference, 500, 8, seed=0,
                                       chunk_size=64)(ReplaySampler(fake))
    one_shot = evaluation.summarise("digits", *evaluation.classify(classifier, [fake]),
                                    reference)
    for key, value in one_shot.items():
        assert record[key] == pytest.approx(value, rel=1e-6), key
    assert record["eval_seconds"] > 0
