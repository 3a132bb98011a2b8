"""Score a set of images: ``python -m tfgan_exp.score IMAGES [--reference=REF | --dataset=D]``.

IMAGES (and REF) is a ``.npy`` / ``.npz`` array of shape N x H x W x 3, uint8 in
[0, 255] or float in [-1, 1], or a folder of PNG files. Prints a summary for people and,
as its last line, one JSON object: ``inception_score`` (over all images),
``inception_score_mean_10`` and ``inception_score_std_10`` (over 10 splits, as papers
report), ``num_images``, and with a reference ``fid``, ``kid``, ``kid_std``,
``precision``, ``recall`` and ``num_reference`` (the reference is cut to a fixed random
subset as large as IMAGES, when it is larger: precision and recall depend on set
sizes). With ``--classifier=digits`` every metric key starts with ``digits_``
(``digits_score``, ``digits_fid``, ...), ``digits_classes`` and ``digits_class_kl`` are
added with a reference, and the images may be gray.
"""
import glob
import json
import os

import numpy as np
from absl import flags

import tfgan_exp  # noqa: F401  (selects tf_keras before TensorFlow is imported)
from tfgan_exp.command_line import fail, run_command
from tfgan_exp.config import DATASET_DEFAULTS, INCEPTION_URL, SPLITS, UsageError

F = flags.FLAGS
flags.DEFINE_string("reference", "", "Reference images for FID (same forms as IMAGES).")
flags.DEFINE_string("dataset", "", "Reference for FID: the real training images of "
                    "cifar10, stl10 or digits (instead of --reference).")
flags.DEFINE_string("data_dir", "", "Prepared TFDS directory for --dataset.")
flags.DEFINE_integer("image_size", 0, "Size of --dataset's images in pixels; 0 = default.")
flags.DEFINE_string("inception_model", INCEPTION_URL,
                    "TF-Hub URL or local directory of TF-GAN's Inception SavedModel.")
flags.DEFINE_enum("classifier", "inception", ["inception", "digits"],
                  "Network that scores: inception, or the offline digits classifier.")
flags.DEFINE_string("cache_dir", "", "Cache for the digits classifier and real statistics.")


def load_image_set(path: str, what: str = "IMAGES", channels=(3,)) -> np.ndarray:
    """Reads and checks an image set; returns float32 [N, H, W, C] in [-1, 1].

    Raises UsageError naming the problem: missing path, unreadable file, wrong shape,
    wrong channel count, values outside the stated ranges, fewer than 10 images.
    """
    if not os.path.exists(path):
        raise UsageError(f"{what} {path}: no such file or directory")
    if os.path.isdir(path):
        images = _read_png_folder(path, what)
    else:
        images = _read_array_file(path, what)
    if images.ndim != 4:
        raise UsageError(f"{what} {path}: shape {images.shape}; expected N x H x W x C")
    if images.shape[-1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise UsageError(f"{what} {path}: {images.shape[-1]} channel(s) "
                         f"(shape {images.shape}); expected {allowed} (RGB images)"
                         if channels == (3,) else
                         f"{what} {path}: {images.shape[-1]} channels; expected {allowed}")
    if len(images) < SPLITS:
        raise UsageError(f"{what} {path}: {len(images)} images; at least {SPLITS} are needed "
                         f"(the score is also reported over {SPLITS} splits)")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    if np.issubdtype(images.dtype, np.floating):
        low, high = float(np.min(images)), float(np.max(images))
        if not (np.isfinite(low) and np.isfinite(high)) or low < -1.0 - 1e-6 or high > 1.0 + 1e-6:
            raise UsageError(f"{what} {path}: float values span [{low:.4g}, {high:.4g}]; "
                             "float images must lie in [-1, 1] (or give uint8 in [0, 255])")
        return images.astype(np.float32)
    raise UsageError(f"{what} {path}: dtype {images.dtype}; expected uint8 in [0, 255] "
                     "or float in [-1, 1]")


def _read_array_file(path, what):
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"{what} {path}: not a .npy/.npz array ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = "images" if "images" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise UsageError(f"{what} {path}: holds arrays {keys}; name one 'images'")
            return loaded[key]
    return loaded


def _read_png_folder(path, what):
    import tensorflow as tf
    files = sorted(glob.glob(os.path.join(path, "*.png")))
    if not files:
        raise UsageError(f"{what} {path}: a folder with no .png files")
    images = []
    for file in files:
        try:
            images.append(tf.io.decode_png(tf.io.read_file(file), channels=0).numpy())
        except tf.errors.OpError:
            raise UsageError(f"{what} {file}: not a readable PNG file") from None
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise UsageError(f"{what} {path}: PNG files of different shapes {sorted(shapes)}")
    if images[0].dtype != np.uint8:
        raise UsageError(f"{what} {path}: 16-bit PNG files; expected 8-bit")
    return np.stack(images)


def command_record(images, classifier, reference=None) -> dict:
    """The score command's record for float images [N, H, W, C] in [-1, 1]."""
    from tfgan_exp.evaluation.evaluator import score_images
    record = score_images(classifier, images, reference)
    name = classifier.name
    record[f"{name}_score_std_10"] = record.pop(f"{name}_score_std")
    record["num_images"] = len(images)
    return record


def main(argv):
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    try:
        if len(argv) != 2:
            raise UsageError("give exactly one IMAGES path (a .npy/.npz file or a folder of "
                             f"PNG files); got {len(argv) - 1}")
        if F.reference and F.dataset:
            raise UsageError("give --reference or --dataset, not both")
        if F.dataset and F.dataset not in DATASET_DEFAULTS:
            raise UsageError(f"--dataset={F.dataset}: unknown; choose one of "
                             f"{', '.join(DATASET_DEFAULTS)}")
        channels = (1, 3) if F.classifier == "digits" else (3,)
        images = load_image_set(argv[1], "IMAGES", channels)
        reference_images = (load_image_set(F.reference, "--reference", channels)
                            if F.reference else None)
        from tfgan_exp import data
        from tfgan_exp.evaluation import evaluator
        from tfgan_exp.evaluation.classifiers import (DigitsClassifier, InceptionClassifier,
                                                      default_cache_dir)
        cache_dir = F.cache_dir or default_cache_dir()
        classifier = (DigitsClassifier(cache_dir) if F.classifier == "digits"
                      else InceptionClassifier(F.inception_model))
        # The reference is cut to as many images as are scored (a fixed random subset):
        # precision and recall's k-NN radii depend on the set sizes (Kynkaanniemi et al.
        # 2019 compare equal sizes), and training's evaluation compares equal sizes too.
        reference = None
        if reference_images is not None:
            chosen = np.random.default_rng(0).permutation(len(reference_images))
            # In random order, as KID's blocks assume (a file may be sorted by class).
            reference = evaluator.reference_of(
                classifier, *classifier(reference_images[chosen[:len(images)]]))
        elif F.dataset:
            size = F.image_size or DATASET_DEFAULTS[F.dataset]["image_size"]
            real = data.load_images(F.dataset, size, F.data_dir)
            reference = evaluator.real_features(classifier, real, f"{F.dataset}-{size}px",
                                                cache_dir, num=len(images))
        record = command_record(images, classifier, reference)
        if reference is not None:
            record["num_reference"] = len(reference.features)
    except UsageError as error:
        fail(str(error))
    name = classifier.name
    print(f"{record['num_images']} images scored with the {name} classifier")
    print(f"  {name} score (all images):  {record[f'{name}_score']:.4f}")
    print(f"  over {SPLITS} splits:             {record[f'{name}_score_mean_10']:.4f} "
          f"± {record[f'{name}_score_std_10']:.4f}")
    from tfgan_exp.evaluation.evaluator import metric_key
    if metric_key(name, "fid") in record:
        print(f"  against {record['num_reference']} reference images (as many as scored, "
              "where the reference has them)")
        print(f"  Fréchet distance to the reference: {record[metric_key(name, 'fid')]:.4f}")
        print(f"  kernel distance (KID):             {record[metric_key(name, 'kid')]:.5f} "
              f"± {record[metric_key(name, 'kid_std')]:.5f}")
        print(f"  precision, recall (k = 3):         {record[metric_key(name, 'precision')]:.3f}"
              f", {record[metric_key(name, 'recall')]:.3f}")
        if metric_key(name, "classes") in record:
            print(f"  classes covered, their KL:         {record[metric_key(name, 'classes')]}"
                  f" of {classifier.num_classes}, {record[metric_key(name, 'class_kl')]:.3f}")
    print(json.dumps(record))


if __name__ == "__main__":
    run_command(main)
