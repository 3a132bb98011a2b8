"""Datasets: digits (bundled, offline), CIFAR-10 and STL-10 (TFDS), held in memory.

``load_images(config)`` returns every training image once, as uint8 [N, S, S, C] in
[0, 255]. ``TrainingBatches`` turns that array into a deterministic stream: the batch
for global step s depends only on (seed, s), so a resumed run sees exactly the data and
noise the uninterrupted run would have seen. Images become float in [-1, 1] on the
accelerator (``to_float``), which keeps host-to-device traffic at one byte per pixel.
"""
import functools
import os
import socket
import urllib.parse
from typing import Dict, Iterable, List

import numpy as np
from absl import logging as absl_logging
import tensorflow as tf

from tfgan_exp.config import UsageError

# TFDS name and split of each TFDS dataset, and its native image size.
TFDS_SOURCES = {
    "cifar10": ("cifar10", "train", 32),
    "stl10": ("stl10", "unlabelled", 96),
}
CHANNELS = {"digits": 1, "cifar10": 3, "stl10": 3}
# Where TFDS keeps prepared copies of its datasets (gs://tfds-data, over HTTPS).
TFDS_GCS_URL = "https://storage.googleapis.com/tfds-data"
# Environment variables through which requests (TFDS's downloader) finds a proxy.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")


def load_images(dataset: str, image_size: int, data_dir: str = "") -> np.ndarray:
    """All training images of ``dataset`` resized to ``image_size``: uint8 [N, S, S, C]."""
    if dataset == "digits":
        return _load_digits(image_size)
    if dataset in TFDS_SOURCES:
        return _load_tfds(dataset, image_size, data_dir)
    raise UsageError(f"unknown dataset {dataset!r}; choose one of digits, "
                     f"{', '.join(TFDS_SOURCES)}")


def _resize_uint8(images, size: int):
    """Resizes uint8 [N, H, W, C] to [N, size, size, C] (antialiased bilinear), uint8."""
    if images.shape[1] == size:
        return tf.cast(images, tf.uint8)
    resized = tf.image.resize(tf.cast(images, tf.float32), [size, size],
                              method="bilinear", antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def _load_digits(size: int) -> np.ndarray:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), as uint8 [N, S, S, 1]."""
    from sklearn.datasets import load_digits  # scikit-learn is imported only for digits
    pixels = load_digits().images.astype(np.float32) * (255.0 / 16.0)
    return _resize_uint8(pixels[..., None], size).numpy()


def unreachable_hosts(urls: Iterable[str], timeout: float = 10.0) -> List[str]:
    """The hosts of ``urls`` that cannot be connected to, each with why ([] if all can).

    TFDS retries a failed download ten times with exponential back-off, about 3.5 minutes
    when a name does not resolve; one connection attempt per host answers in seconds.
    Behind a proxy (``*_PROXY`` set) the proxy connects for us, so nothing is checked.
    """
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return []
    problems = []
    for host, port in sorted({(u.hostname, u.port or (443 if u.scheme == "https" else 80))
                              for u in map(urllib.parse.urlsplit, urls) if u.hostname}):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as error:
            problems.append(f"{host}:{port} ({error})")
    return problems


def _cannot_load(dataset: str, data_dir: str, reason: str) -> UsageError:
    name, split, _ = TFDS_SOURCES[dataset]
    return UsageError(
        f"cannot load the TFDS dataset {name!r} (split {split!r}) from "
        f"{data_dir or 'the default TFDS directory'}: {reason}\n"
        f"Prepare it once on a machine with network access "
        f"(python -c \"import tensorflow_datasets as tfds; tfds.load('{name}', "
        f"data_dir='DIR')\") and pass --data_dir=DIR.")


def check_loadable(dataset: str, data_dir: str = ""):
    """Raises UsageError unless ``dataset`` can be had: digits always; a TFDS dataset
    when it is prepared in ``data_dir`` (TFDS's default if empty) or its download can
    start (one connection to its host or to TFDS's bucket). Downloads nothing; returns
    the TFDS builder (None for digits)."""
    if dataset == "digits":
        return None
    if dataset not in TFDS_SOURCES:
        raise UsageError(f"unknown dataset {dataset!r}; choose one of digits, "
                         f"{', '.join(TFDS_SOURCES)}")
    import tensorflow_datasets as tfds  # slow import, needed for CIFAR-10 / STL-10 only
    name = TFDS_SOURCES[dataset][0]
    # TFDS warns that an unprepared folder "has no dataset_info.json": the error below
    # says what is missing and how to prepare it, so the warning is held back.
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
        sources = [] if builder.is_prepared() else list(builder.url_infos or {})
    except Exception as error:  # TFDS raises many types (files, registry)
        raise _cannot_load(dataset, data_dir, f"{type(error).__name__}: {error}") from None
    finally:
        absl_logging.set_verbosity(verbosity)
    # TFDS first copies a prepared dataset from its Cloud Storage bucket and only then
    # downloads from the source, so either one being reachable is enough.
    unreachable = unreachable_hosts(sources)
    if unreachable:
        gcs_unreachable = unreachable_hosts([TFDS_GCS_URL])
        unreachable = unreachable + gcs_unreachable if gcs_unreachable else []
    if unreachable:
        raise _cannot_load(dataset, data_dir, f"it is not prepared there, and its download "
                           f"cannot start: cannot connect to {' or '.join(unreachable)}")
    return builder


def _load_tfds(dataset: str, size: int, data_dir: str) -> np.ndarray:
    name, split, _ = TFDS_SOURCES[dataset]

    def cannot_load(reason: str) -> UsageError:
        return _cannot_load(dataset, data_dir, reason)

    builder = check_loadable(dataset, data_dir)
    try:
        builder.download_and_prepare()
        source = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as error:  # TFDS raises many types (network, files, checksums)
        raise cannot_load(f"{type(error).__name__}: {error}") from None
    batches = (source.map(lambda example: example["image"])
               .batch(1000)
               .map(functools.partial(_resize_uint8, size=size),
                    num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(2))
    parts = [batch.numpy() for batch in batches]
    if not parts:
        raise UsageError(f"the TFDS dataset {name!r} split {split!r} is empty")
    return np.concatenate(parts)


def chunks(array, size: int):
    """Yields consecutive slices of ``array`` of at most ``size`` items: bounds memory."""
    for start in range(0, len(array), size):
        yield array[start:start + size]


def to_float(images: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1]."""
    return tf.cast(images, dtype) / 127.5 - 1.0


def to_uint8(images) -> np.ndarray:
    """float in [-1, 1] (any shape) -> uint8 in [0, 255], rounded."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


class TrainingBatches:
    """The deterministic training stream: global step -> one step's inputs.

    One step is ``d_steps`` discriminator updates and one generator update, so it takes
    ``d_steps`` batches of real images. Every tensor has the global batch first, so that
    ``tf.distribute`` splits images and noise across replicas consistently:

      images  uint8   [batch, d_steps, S, S, C], a fresh permutation of the data each epoch
      z_d     float32 [batch, d_steps, latent_dim], N(0, 1): noise for the D updates
      z_g     float32 [batch, latent_dim], N(0, 1): noise for the G update
      gp_eps  float32 [batch, d_steps], U(0, 1): WGAN-GP interpolation weights
    """

    def __init__(self, images: np.ndarray, batch_size: int, d_steps: int,
                 latent_dim: int, seed: int):
        self.images = images
        self.batch_size = batch_size
        self.d_steps = d_steps
        self.latent_dim = latent_dim
        self.seed = seed
        self.images_per_step = batch_size * d_steps
        self.steps_per_epoch = len(images) // self.images_per_step  # drop the remainder
        self._cached_permutation = None
        if self.steps_per_epoch < 1:
            raise UsageError(
                f"--batch_size={batch_size} x --d_steps={d_steps} = {self.images_per_step} "
                f"images per step, but the dataset has only {len(images)} images")

    def _permutation(self, epoch: int) -> np.ndarray:
        """The epoch's order of the images, computed once per epoch.

        Cached on the instance (not with lru_cache, whose cache would keep every past
        instance, and its images, alive across the runs of a grid).
        """
        cached = self._cached_permutation
        if cached is None or cached[0] != epoch:
            order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.images))
            cached = self._cached_permutation = (epoch, order)
        return cached[1]

    def __call__(self, step: int) -> Dict[str, np.ndarray]:
        """The inputs of global step ``step`` (0-based), as numpy arrays."""
        step = int(step)
        epoch, index = divmod(step, self.steps_per_epoch)
        order = self._permutation(epoch)[index * self.images_per_step:
                                         (index + 1) * self.images_per_step]
        # Column k is the k-th discriminator batch of this step.
        order = order.reshape(self.d_steps, self.batch_size).T
        rng = np.random.default_rng([self.seed, step, 1])
        b, d, latent = self.batch_size, self.d_steps, self.latent_dim
        return {
            "images": self.images[order],
            "z_d": rng.standard_normal((b, d, latent), dtype=np.float32),
            "z_g": rng.standard_normal((b, latent), dtype=np.float32),
            "gp_eps": rng.random((b, d), dtype=np.float32),
        }

    def element_spec(self) -> Dict[str, tf.TensorSpec]:
        b, d, latent = self.batch_size, self.d_steps, self.latent_dim
        return {
            "images": tf.TensorSpec((b, d) + self.images.shape[1:], tf.uint8),
            "z_d": tf.TensorSpec((b, d, latent), tf.float32),
            "z_g": tf.TensorSpec((b, latent), tf.float32),
            "gp_eps": tf.TensorSpec((b, d), tf.float32),
        }

    def dataset(self, first_step: int, end_step: int) -> tf.data.Dataset:
        """tf.data stream of steps [first_step, end_step), static shapes, prefetched."""
        spec = self.element_spec()
        keys = sorted(spec)

        @tf.autograph.experimental.do_not_convert  # no Python control flow to convert
        def load(step):
            arrays = tf.numpy_function(
                lambda s: tuple(self(s)[k] for k in keys), [step],
                [spec[k].dtype for k in keys], stateful=False)
            return {k: tf.ensure_shape(a, spec[k].shape) for k, a in zip(keys, arrays)}

        options = tf.data.Options()
        # Every element is one global batch made from a step index: shard by data.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        options.deterministic = True
        # tf.data's autotuning thread sleeps between its rounds (for seconds, longer as
        # a run goes on), and destroying the iterator at the end of fit waits for it:
        # measured at 6-40 s per run in a process on one core, with no CPU used. The
        # pipeline is a cheap numpy function of the step, so fixed parallelism loses
        # nothing, and every element is the same.
        options.autotune.enabled = False
        return (tf.data.Dataset.range(first_step, end_step)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE)
                .with_options(options))


def fixed_noise(num: int, latent_dim: int, seed: int) -> np.ndarray:
    """The sample grid's noise: float32 [num, latent_dim], the same for every epoch."""
    return np.random.default_rng([seed, 0, 2]).standard_normal(
        (num, latent_dim), dtype=np.float32)

