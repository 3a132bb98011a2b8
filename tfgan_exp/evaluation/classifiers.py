"""The networks that score images: TF-GAN's Inception module, and a small digits classifier.

A classifier maps float32 images [N, H, W, C] in [-1, 1] to ``(logits, features)``:
float32 [N, classes] for the score and [N, D] for the distances (FID, KID, precision and
recall). ``forward`` is that map as TensorFlow ops, for one replica's batch; calling the
classifier on a numpy array runs ``forward`` on every replica of the strategy it was
built under, chunk by chunk. Each has a ``name`` that prefixes its metrics and a
``fingerprint`` (network and preprocessing) that keys cached statistics.
"""
import fcntl
import hashlib
import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from tfgan_exp.runtime import lease as lease_lib
from tfgan_exp.config import INCEPTION_URL, UsageError
from tfgan_exp.data import load_images, to_float
from tfgan_exp.runtime.replicated import ReplicatedMap
from tfgan_exp.rundir import write_atomically, written_atomically

INCEPTION_SIZE = 299
INCEPTION_HELP = (
    "To use it offline, fetch it once where there is network access:\n"
    "  TFHUB_CACHE_DIR=DIR python -c \"import tensorflow_hub as hub; "
    f"print(hub.resolve('{INCEPTION_URL}'))\"\n"
    "then pass the printed directory as --inception_model=PATH (or keep TFHUB_CACHE_DIR=DIR "
    "set), or --inception_model=none to train without Inception metrics.")


def default_cache_dir() -> str:
    """Where trained classifiers and real-image statistics are kept between runs."""
    return os.environ.get("TFGAN_EXP_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "tfgan_exp"))


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Classifier:
    """What the two classifiers share: running ``forward`` through a strategy.

    Subclasses set ``name``, ``fingerprint``, ``num_classes`` and ``feature_dim``, build
    their variables under ``self.strategy.scope()``, and define ``forward``.
    """
    name = ""
    # Whether the classes are the data's modes (digits), so that the classes a generator
    # covers measure mode collapse; Inception's 1,008 ImageNet classes are not.
    classes_are_modes = False
    # Describes the preprocessing in ``forward``; part of the fingerprint, so that cached
    # real statistics are recomputed when it changes.
    preprocessing = ""

    def __init__(self, strategy=None, chunk_size: int = 200):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chunk_size = chunk_size
        self._map = None

    def forward(self, images: tf.Tensor):
        raise NotImplementedError

    def __call__(self, images):
        """float32 [N, H, W, C] in [-1, 1] -> numpy (logits [N, classes], features [N, D])."""
        if self._map is None:
            self._map = ReplicatedMap(self.strategy, self.forward, self.chunk_size)
        return self._map(np.asarray(images, np.float32))


class InceptionClassifier(Classifier):
    """TF-GAN's Inception (logits [1008], pool_3 [2048]), loaded once per process.

    Images are resized to 299x299 bilinearly, as TF-GAN's examples do; gray images are
    repeated over three channels. Args: ``handle``, the TF-Hub URL or a local directory
    holding the SavedModel; ``strategy``, whose replicas run it (its variables are
    placed by the strategy); ``chunk_size``, images per replica per forward pass (bounds
    memory); ``module``, a callable with the same outputs to use instead of loading
    ``handle``.
    """
    name = "inception"
    preprocessing = f"gray:tile3,resize:bilinear{INCEPTION_SIZE},range:[-1,1]"

    def __init__(self, handle: str = INCEPTION_URL, strategy=None, chunk_size: int = 200,
                 module=None):
        super().__init__(strategy, chunk_size)
        if module is not None:  # an already-built network, e.g. the benchmark's stand-in
            self.module, network = module, f"module:{id(module)}"
        else:
            with self.strategy.scope():
                self.module = _load_saved_model(handle)
            pb = os.path.join(handle, "saved_model.pb")
            network = _sha256_file(pb) if os.path.exists(pb) else handle
        self.fingerprint = f"{network}|{self.preprocessing}"
        self._check_outputs = tf.function(self.forward, reduce_retracing=True)
        try:
            logits, features = self._check_outputs(tf.zeros([1, 32, 32, 3]))
        except (KeyError, TypeError, ValueError, tf.errors.OpError) as error:
            raise UsageError(f"--inception_model={handle}: not an Inception module with "
                             f"outputs 'logits' and 'pool_3' ({error})") from None
        self.num_classes, self.feature_dim = logits.shape[1], features.shape[1]

    def forward(self, images):
        if images.shape[-1] == 1:
            images = tf.tile(images, [1, 1, 1, 3])
        resized = tf.image.resize(images, [INCEPTION_SIZE, INCEPTION_SIZE], method="bilinear")
        outputs = self.module(resized)
        batch = tf.shape(images)[0]
        return (tf.reshape(outputs["logits"], [batch, -1]),
                tf.reshape(outputs["pool_3"], [batch, -1]))

    def traced_forward(self, image_shape):
        """The forward pass (resize, then the network) traced for one [1, *image_shape]."""
        return self._check_outputs.get_concrete_function(
            tf.TensorSpec((1,) + tuple(image_shape), tf.float32))


def inception_standin():
    """An untrained Inception-v3 with the module's outputs (logits [1008], pool_3 [2048]).

    Built locally (no download): the same network and cost as the real module, for
    timing evaluation where the module cannot be had. Its scores mean nothing.
    """
    net = tf.keras.applications.InceptionV3(weights=None, classes=1008,
                                            classifier_activation=None)
    return tf.keras.Model(net.input, {"logits": net.output,
                                      "pool_3": net.get_layer("avg_pool").output})


def check_inception(handle: str) -> None:
    """Raises UsageError unless the Inception model ``handle`` can be had, without
    loading it: a local directory must hold the SavedModel; a URL must be in the TF-Hub
    cache (TFHUB_CACHE_DIR) or its host must answer."""
    if "://" not in handle:
        if not os.path.exists(os.path.join(handle, "saved_model.pb")):
            raise UsageError(f"--inception_model={handle}: no SavedModel there "
                             f"(expected {os.path.join(handle, 'saved_model.pb')}).\n"
                             + INCEPTION_HELP)
        return
    from tfgan_exp.data import unreachable_hosts
    # TF-Hub keeps a fetched module in a folder named by the SHA-1 of its URL.
    cache = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(),
                                                               "tfhub_modules")
    cached = os.path.join(cache, hashlib.sha1(handle.encode("utf8")).hexdigest())
    if os.path.exists(os.path.join(cached, "saved_model.pb")):
        return
    unreachable = unreachable_hosts([handle])
    if unreachable:
        raise UsageError(f"cannot load the Inception model {handle}: it is not in the "
                         f"TF-Hub cache ({cache}) and {' or '.join(unreachable)} cannot be "
                         "reached.\n" + INCEPTION_HELP)


def _load_saved_model(handle: str):
    """hub.load with a message that says how to get the module when it cannot be had."""
    is_url = "://" in handle
    if not is_url:
        check_inception(handle)
    import tensorflow_hub as hub  # slow import: only when Inception is used
    try:
        return hub.load(handle)
    except Exception as error:  # network, file and format errors all mean "cannot be had"
        raise UsageError(f"cannot load the Inception model {handle}: "
                         f"{type(error).__name__}: {str(error)[:300]}\n"
                         + INCEPTION_HELP) from None


DIGITS_SIZE = 16
DIGITS_VERSION = 1  # bump when the architecture or the training recipe changes
DIGITS_MIN_ACCURACY = 0.97


def _build_digits_model() -> tf.keras.Model:
    """16x16x1 in [-1, 1] -> (logits [10], features [128])."""
    layers = tf.keras.layers
    images = tf.keras.Input((DIGITS_SIZE, DIGITS_SIZE, 1))
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(images)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    features = layers.Dense(128, activation="relu", name="features")(layers.Flatten()(x))
    logits = layers.Dense(10, name="logits")(layers.Dropout(0.3)(features))
    return tf.keras.Model(images, [logits, features], name="digits_classifier")


class DigitsClassifier(Classifier):
    """A small CNN trained once on the bundled digits and cached: the offline stand-in
    for Inception, as TF-GAN's MNIST score is. Real digits score about 9.9 (at most 10).

    The first use trains it (a few seconds; fixed seed, 80/20 split, on the default
    strategy) and refuses to continue below 97% held-out accuracy; every use then loads
    the cached weights into a copy built under ``strategy``.
    """
    name = "digits"
    classes_are_modes = True
    preprocessing = f"rgb:mean,resize:antialias-bilinear{DIGITS_SIZE},range:[-1,1]"

    def __init__(self, cache_dir: str = "", strategy=None, chunk_size: int = 1000):
        super().__init__(strategy, chunk_size)
        weights, info_path = ensure_digits_classifier(cache_dir)
        with self.strategy.scope():
            self.model = _build_digits_model()
        self.model.load_weights(weights)
        with open(info_path) as f:
            info = json.load(f)
        self.held_out_accuracy = info["held_out_accuracy"]
        # What real digits score: the most a generator can be expected to reach.
        self.real_digits_score = info.get("real_digits_score") or _real_digits_score(
            self.model)
        self.fingerprint = f"{_sha256_file(weights)}|{self.preprocessing}"
        self.num_classes, self.feature_dim = 10, 128

    def forward(self, images):
        if images.shape[-1] == 3:
            images = tf.reduce_mean(images, axis=-1, keepdims=True)
        if images.shape[1] != DIGITS_SIZE:
            images = tf.image.resize(images, [DIGITS_SIZE, DIGITS_SIZE], antialias=True)
        logits, features = self.model(images, training=False)
        return logits, features


def ensure_digits_classifier(cache_dir: str = ""):
    """Trains and caches the digits classifier unless ``cache_dir`` has it. Call it
    outside any strategy's scope: it then runs no collectives, so one worker of a
    cluster can do it while the others wait. Returns the paths of its weights and of
    its info file."""
    cache_dir = cache_dir or default_cache_dir()
    weights = os.path.join(cache_dir, f"digits_classifier_v{DIGITS_VERSION}.weights.h5")
    info_path = weights.replace(".weights.h5", ".json")
    if os.path.exists(weights):
        return weights, info_path
    os.makedirs(cache_dir, exist_ok=True)
    # One process trains it and the others wait for its file: each training its own at
    # once (the slots of a --parallel grid, array tasks sharing a cache), runs of one
    # grid would be scored by different classifiers (training is not bit-reproducible
    # across processes), and the last file written would change a resumed run's scale.
    with open(weights.replace(".weights.h5", ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another process that is training the digits classifier "
                  f"into {cache_dir}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in lease_lib.UNSUPPORTED:
                raise
            # A file system without locks (some NFS and Lustre mounts): unlocked; on
            # such a cache, train the classifier once (one run) before a grid starts.
        if not os.path.exists(weights):
            trained = _build_digits_model()
            info = {"held_out_accuracy": _train_digits(trained),
                    "real_digits_score": _real_digits_score(trained)}
            # The info file first: the weights file's existence is what says "trained".
            write_atomically(info_path, json.dumps(info))
            with written_atomically(weights, suffix=".weights.h5") as temporary:
                trained.save_weights(temporary)
    return weights, info_path


def _real_digits_score(model: tf.keras.Model) -> float:
    """The score of all 1,797 real digits under ``model`` (the same definition as IS)."""
    from tfgan_exp.evaluation.metrics import classifier_score
    logits, _ = model(to_float(load_images("digits", DIGITS_SIZE)), training=False)
    return classifier_score(logits.numpy())


def _train_digits(model: tf.keras.Model) -> float:
    """Trains ``model`` on 80% of the digits; returns its held-out accuracy."""
    from sklearn.datasets import load_digits
    digits = load_digits()  # for the labels; the images are the training set's
    images = to_float(load_images("digits", DIGITS_SIZE)).numpy()
    order = np.random.default_rng(0).permutation(len(images))
    held_out, train = order[:360], order[360:]
    tf.keras.utils.set_random_seed(0)
    trainer = tf.keras.Model(model.input, model.outputs[0])
    trainer.compile(tf.keras.optimizers.Adam(1e-3),
                    tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    trainer.fit(images[train], digits.target[train], batch_size=64, epochs=30, verbose=0)
    accuracy = float(trainer.evaluate(images[held_out], digits.target[held_out],
                                      verbose=0)[1])
    if accuracy < DIGITS_MIN_ACCURACY:
        raise RuntimeError(f"digits classifier reached only {accuracy:.3f} held-out "
                           f"accuracy (< {DIGITS_MIN_ACCURACY})")
    return accuracy
