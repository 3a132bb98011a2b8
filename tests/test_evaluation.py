"""IS, FID, KID, precision and recall equal independent numpy computations; the cache;
evaluation on two replicas equals one device."""
import glob
import os

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from conftest import FAKE_FEATURES
from tfgan_exp import data
from tfgan_exp.gan import networks
from tfgan_exp.evaluation import evaluator, metrics
from tfgan_exp.evaluation.classifiers import DigitsClassifier, InceptionClassifier
from tfgan_exp.config import UsageError
from tfgan_exp.evaluation.tfgan import tfgan_eval


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


def numpy_kid(real, fake, blocks):
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 in ``blocks`` equal consecutive
    blocks; (mean over blocks, standard error of that mean)."""
    d = real.shape[1]
    estimates = []
    for r, g in zip(np.array_split(real, blocks), np.array_split(fake, blocks)):
        k_rr, k_gg, k_rg = ((r @ r.T / d + 1) ** 3, (g @ g.T / d + 1) ** 3,
                            (r @ g.T / d + 1) ** 3)
        m, n = len(r), len(g)
        estimates.append((k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
                         + (k_gg.sum() - np.trace(k_gg)) / (n * (n - 1)) - 2 * k_rg.mean())
    estimates = np.array(estimates)
    std = np.sqrt(estimates.var(ddof=1) / blocks) if blocks > 1 else float("nan")
    return estimates.mean(), std


def numpy_precision_recall(real, fake, k=3):
    """Kynkaenniemi et al. 2019 by brute force: a point is inside a set's manifold when it
    lies within some member's distance to that member's k-th nearest other member."""
    def radii(x):
        distances = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself

    def inside(queries, centres):
        distances = np.linalg.norm(queries[:, None] - centres[None], axis=-1)
        return np.mean((distances <= radii(centres)[None]).any(axis=1))

    return inside(fake, real), inside(real, fake)


def test_score_equals_numpy_definition():
    logits = np.random.default_rng(1).normal(0, 3, (500, 1008)).astype(np.float32)
    assert metrics.classifier_score(logits) == pytest.approx(numpy_is(logits), rel=1e-9)


def test_constant_logits_score_one_and_k_confident_classes_score_k():
    assert metrics.classifier_score(np.ones((100, 1008))) == pytest.approx(1.0)
    k = 7
    confident = np.full((700, 1008), -30.0)
    confident[np.arange(700), np.arange(700) % k] = 30.0
    assert metrics.classifier_score(confident) == pytest.approx(k, rel=1e-6)
    assert metrics.split_scores(confident) == pytest.approx((k, 0.0), abs=1e-5)


def test_split_scores_need_ten_images():
    with pytest.raises(ValueError, match="at least 10"):
        metrics.split_scores(np.zeros((9, 10)))


def test_fid_equals_numpy_and_is_zero_against_itself():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (400, 16))
    b = rng.normal(0.5, 1.5, (300, 16))
    assert metrics.frechet_distance(a, b) == pytest.approx(numpy_fid(a, b), rel=1e-6)
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_kid_is_tfgans_at_every_size_with_a_standard_error_below_1024_too():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(0, 1, (40, 6)), rng.normal(0.3, 1.2, (40, 6))
    kid, std = metrics.kernel_distance(real, fake)
    # One block, as TF-GAN's default: its value, not that of a split into two blocks.
    tfgan_kid = tfgan_eval.kernel_classifier_distance_from_activations(
        tf.constant(real), tf.constant(fake))
    assert kid == pytest.approx(float(tfgan_kid), rel=1e-9)
    assert kid == pytest.approx(numpy_kid(real, fake, blocks=1)[0], rel=1e-9)
    # TF-GAN has no standard error for one block: the mean over 10 blocks of 4 gives it.
    assert std == pytest.approx(numpy_kid(real, fake, blocks=10)[1], rel=1e-9)
    big_real, big_fake = rng.normal(0, 1, (2100, 4)), rng.normal(0, 1, (2100, 4))
    kid, std = metrics.kernel_distance(big_real, big_fake)  # 2,100: three blocks of 700
    assert (kid, std) == pytest.approx(numpy_kid(big_real, big_fake, blocks=3), rel=1e-9)
    tfgan = tfgan_eval.kernel_classifier_distance_and_std_from_activations(
        tf.constant(big_real), tf.constant(big_fake))  # TF-GAN's default blocks
    assert (kid, std) == pytest.approx((float(tfgan[0]), float(tfgan[1])), rel=1e-9)
    # Unbiased: two samples of one distribution are near 0, of two distributions not.
    same = metrics.kernel_distance(big_real, rng.normal(0, 1, (2100, 4)))[0]
    shifted = metrics.kernel_distance(big_real, rng.normal(0.5, 1, (2100, 4)))[0]
    assert abs(same) < 0.01 < shifted


def test_classes_covered_and_their_kl_divergence_measure_collapse():
    real = np.full(10, 180)  # the digits: about as many of each
    def logits_of(classes):  # one-hot logits of the predicted classes
        return np.eye(10)[np.asarray(classes)] * 5.0
    everything = logits_of(np.arange(2000) % 10)
    assert metrics.class_coverage(everything, real) == (10, pytest.approx(0, abs=1e-12))
    one = logits_of(np.full(2000, 3))
    assert metrics.class_coverage(one, real) == (1, pytest.approx(np.log(10)))
    two = logits_of(np.arange(2000) % 2)
    assert metrics.class_coverage(two, real) == (2, pytest.approx(np.log(5)))
    # A few stray images of a class (a classifier's errors) do not cover it: 15 of 2,000
    # is below a tenth of its real share (20); 25 is above.
    stray = logits_of(np.concatenate([np.full(1960, 3), np.full(15, 4), np.full(25, 5)]))
    assert metrics.class_coverage(stray, real)[0] == 2


def test_precision_and_recall_equal_numpy_by_brute_force():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(0, 1, (60, 3)), rng.normal(0.8, 1.0, (50, 3))
    assert metrics.precision_recall(real, fake) == pytest.approx(
        numpy_precision_recall(real, fake), abs=1e-12)
    assert 0 < metrics.precision_recall(real, fake)[0] < 1


def test_dropping_a_mode_lowers_recall_and_not_precision():
    rng = np.random.default_rng(5)
    centres = np.array([[-10.0, 0.0], [10.0, 0.0]])
    real = np.concatenate([centre + rng.normal(0, 1, (100, 2)) for centre in centres])
    both_modes = np.concatenate([centre + rng.normal(0, 1, (100, 2)) for centre in centres])
    one_mode = centres[0] + rng.normal(0, 1, (200, 2))  # the generator dropped a mode
    precision_both, recall_both = metrics.precision_recall(real, both_modes)
    precision_one, recall_one = metrics.precision_recall(real, one_mode)
    assert (precision_one, recall_one) == pytest.approx(
        numpy_precision_recall(real, one_mode), abs=1e-12)
    assert recall_both > 0.9 and precision_both > 0.9
    assert recall_one < 0.55  # at most the half of the real images near the kept mode
    assert precision_one > 0.9  # what it makes still looks real


def test_metric_keys_keep_papers_names_for_inception_and_prefix_the_rest():
    assert [evaluator.metric_key("inception", m) for m in ("score", "fid", "kid", "recall")] == [
        "inception_score", "fid", "kid", "recall"]
    assert [evaluator.metric_key("digits", m) for m in ("score", "fid", "kid_std")] == [
        "digits_score", "digits_fid", "digits_kid_std"]


def test_inception_classifier_chunks_equal_one_pass(fake_inception_dir):
    images = np.random.default_rng(4).uniform(-1, 1, (23, 32, 32, 3)).astype(np.float32)
    classifier = InceptionClassifier(fake_inception_dir, chunk_size=100)
    one_pass = classifier(images)
    chunked = InceptionClassifier(fake_inception_dir, chunk_size=5)(images)
    assert one_pass[0].shape == (23, 1008) and one_pass[1].shape == (23, FAKE_FEATURES)
    np.testing.assert_allclose(chunked[0], one_pass[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chunked[1], one_pass[1], rtol=1e-5, atol=1e-5)
    # The same classifier on another image shape, same count (so the same chunk length):
    # traced anew, with the numbers of a classifier that only ever saw that shape.
    gray = np.ascontiguousarray(images[:, :16, :16, :1])
    np.testing.assert_allclose(classifier(gray)[1],
                               InceptionClassifier(fake_inception_dir, chunk_size=100)(gray)[1],
                               rtol=1e-5, atol=1e-5)


def test_a_missing_inception_model_says_how_to_get_one(tmp_path):
    with pytest.raises(UsageError, match="(?s)no SavedModel there.*hub.resolve"):
        InceptionClassifier(str(tmp_path / "nowhere"))


def test_real_features_are_cached_and_keyed(fake_inception_dir, tmp_path):
    classifier = InceptionClassifier(fake_inception_dir)
    images = np.random.default_rng(5).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    first = evaluator.real_features(classifier, images, "fake-32px", str(tmp_path), 30)
    files = glob.glob(str(tmp_path / "features-*.npz"))
    assert len(files) == 1 and first.radii.shape == (30,)
    assert first.features.shape == (30, FAKE_FEATURES)
    mtime = os.path.getmtime(files[0])
    again = evaluator.real_features(classifier, images, "fake-32px", str(tmp_path), 30)
    assert os.path.getmtime(files[0]) == mtime  # read back, not recomputed
    np.testing.assert_array_equal(again.features, first.features)
    # Another count, label, images or preprocessing: a new entry each, never a mix-up.
    evaluator.real_features(classifier, images, "fake-32px", str(tmp_path), 20)
    evaluator.real_features(classifier, images, "other-32px", str(tmp_path), 30)
    other = evaluator.real_features(classifier, 255 - images, "fake-32px", str(tmp_path), 30)
    classifier.fingerprint += "|resize:nearest"
    evaluator.real_features(classifier, images, "fake-32px", str(tmp_path), 30)
    assert len(glob.glob(str(tmp_path / "features-*.npz"))) == 5
    assert not np.allclose(other.features, first.features)


@pytest.mark.slow
def test_digits_classifier_is_accurate_and_real_digits_score_high(cache_dir):
    classifier = DigitsClassifier(cache_dir)
    assert classifier.held_out_accuracy >= 0.97
    real = data.to_float(data.load_images("digits", 16)).numpy()
    record = evaluator.score_images(classifier, real, evaluator.real_features(
        classifier, data.load_images("digits", 16), "digits-16px", cache_dir))
    assert record["digits_score"] > 9.5
    # The real set against itself: zero up to the matrix root's error (sets differ by
    # 10..1000), every real image inside its own manifold.
    assert record["digits_fid"] == pytest.approx(0, abs=1e-4)
    assert record["digits_precision"] == record["digits_recall"] == 1.0
    assert record["digits_classes"] == 10 and record["digits_class_kl"] == 0
    assert glob.glob(os.path.join(cache_dir, "digits_classifier_v*.weights.h5"))


def test_the_anchor_is_held_out_real_images_against_as_many_others(cache_dir):
    classifier = DigitsClassifier(cache_dir)
    images = data.load_images("digits", 16)
    reference = evaluator.real_features(classifier, images, "digits-16px", cache_dir, 2000,
                                        held_out=True)
    assert len(reference.features) == len(images) // 2 == 898  # half: the rest is held out
    anchor = reference.anchor
    assert anchor["digits_score"] > 9.0 and anchor["digits_classes"] == 10
    assert 0 < anchor["digits_fid"] < 10 and anchor["digits_recall"] > 0.8
    assert anchor["digits_kid_std"] > 0  # 898 features: one block, a standard error still
    again = evaluator.real_features(classifier, images, "digits-16px", cache_dir, 2000,
                                    held_out=True)
    assert again.anchor == anchor  # read back from the cache
    scorer = evaluator.Scorer(classifier, reference)
    assert scorer.describe(2000) == {"classifier": "digits", "num_generated": 2000,
                                     "num_compared": 898, "num_reference": 898,
                                     "anchor": anchor}


@pytest.mark.slow
def test_epoch_evaluation_on_two_replicas_equals_one_device(cache_dir, two_cpus, mirrored):
    """Generation and classification split across two replicas give one device's numbers."""
    shape = (16, 16, 1)
    records = []
    for strategy in (tf.distribute.OneDeviceStrategy(two_cpus[0]), mirrored):
        tf.keras.utils.set_random_seed(0)
        with strategy.scope():
            generator = networks.build_generator(shape, latent_dim=8, width=4)
        classifier = DigitsClassifier(cache_dir, strategy, chunk_size=64)
        reference = evaluator.real_features(classifier, data.load_images("digits", 16),
                                            "digits-16px", cache_dir, 300)
        scorer = evaluator.Scorer(classifier, reference)
        record = evaluator.EpochEvaluator(scorer, strategy, generator, 300, 8, seed=0)()
        assert record.pop("eval_seconds") > 0
        records.append(record)
    assert set(records[0]) == {"digits_score", "digits_score_mean_10", "digits_score_std",
                               "digits_fid", "digits_kid", "digits_kid_std",
                               "digits_precision", "digits_recall", "digits_classes",
                               "digits_class_kl"}
    for key, value in records[0].items():
        assert records[1][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_an_untrained_generator_did_not_learn_and_is_not_called_collapsed(cache_dir):
    """What the report's failure thresholds rest on: an untrained generator's images lie
    outside the real digits' manifold (precision near 0), whatever digit they read as."""
    from tfgan_exp.report import analysis
    classifier = DigitsClassifier(cache_dir)
    images = data.load_images("digits", 16)
    reference = evaluator.real_features(classifier, images, "digits-16px", cache_dir, 2000,
                                        held_out=True)
    tf.keras.utils.set_random_seed(0)
    generator = networks.build_generator((16, 16, 1), latent_dim=8, width=4)
    z = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    record = evaluator.score_images(classifier, generator(z, training=False).numpy(),
                                    reference)
    assert record["digits_precision"] < analysis.LEARNED_PRECISION
    assert reference.anchor["digits_precision"] > 0.5  # real digits lie well inside
