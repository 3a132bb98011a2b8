"""Test set-up: one TensorFlow per process, its CPU split into two logical devices.

Two logical CPUs give a real two-replica MirroredStrategy without a GPU; this must
happen before TensorFlow initialises its devices, so it is done at import time here.

Tests never read or write the user's working folders: every test runs in a temporary
folder of its own, commands run in a temporary folder, and the default caches (ours,
TFDS's) point into temporary folders too.
"""
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

# One intra-op thread per process, in this one and in every command a test starts (they
# inherit it): `make test` runs several workers on a machine's cores, each starting
# training processes, and threads more than cores only spin. Set before TensorFlow loads.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")


@contextlib.contextmanager
def _quiet_stderr():
    """TensorFlow's C++ start-up lines (oneDNN, CUDA not found) bypass its log level;
    pytest would show them after its summary, from every worker. If the block fails
    (say, a CPU without the instructions TensorFlow was built for), they are shown."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


with _quiet_stderr():
    import tfgan_exp  # noqa: F401  (selects tf_keras before TensorFlow is imported)
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A scratch home for everything a test or a command might write by default.
SCRATCH = tempfile.mkdtemp(prefix="tfgan_exp-tests-")
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)  # each worker's, at its end
os.environ["TFGAN_EXP_CACHE"] = os.path.join(SCRATCH, "cache")
os.environ["TFDS_DATA_DIR"] = os.path.join(SCRATCH, "tensorflow_datasets")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def command_line(*args):
    """``python ARGS`` with a script named relative to the repository made absolute."""
    args = list(args)
    if args and args[0].endswith(".py") and not os.path.isabs(args[0]):
        args[0] = os.path.join(REPO, args[0])
    return [sys.executable, *args]


def wait_for(condition, what, timeout=120, every=0.05, process=None):
    """Calls ``condition`` every ``every`` seconds until it returns a true value, which
    is returned; fails, naming ``what``, once ``timeout`` seconds have passed, or, given
    ``process`` (a Popen the condition waits on), as soon as it ends, with its output."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (status {process.returncode}) before "
                                 f"{what}: {process.communicate()}")
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


def run_command(*args, timeout=300, env=None, cwd=None):
    """Runs ``python ARGS`` in ``cwd`` (default: a new temporary folder); returns the
    CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(command_line(*args), cwd=cwd or tempfile.mkdtemp(dir=SCRATCH),
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def pytest_collection_modifyitems(config, items):
    """Longest first, so that the workers of ``pytest -n`` (make test) end together: the
    tests that wait on another program, then those that train end to end, then the rest,
    each group in file order. (A module's fixture may then be set up again for its later
    tests; no test relies on another having run, or not, before it.)"""
    def group(item):
        if item.get_closest_marker("starts_first"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2
    items.sort(key=group)  # stable


@pytest.fixture(autouse=True)
def in_a_temporary_folder(tmp_path, monkeypatch):
    """Every test runs in a folder of its own: a default ``runs/`` lands there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def two_cpus():
    """Names of the two logical CPU devices."""
    return [d.name for d in tf.config.list_logical_devices("CPU")][:2]


@pytest.fixture(scope="session")
def mirrored():
    """One two-replica MirroredStrategy for the whole session, as a process has one:
    a second one over the same devices would reuse its collective keys and clash."""
    return tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")][:2])


FAKE_FEATURES = 64  # the real pool_3 has 2048; FID's matrix root at 2048 takes ~20 s here


class FakeInception(tf.Module):
    """Stands in for TF-GAN's Inception module: same interface, tiny and deterministic.

    Takes float32 [N, 299, 299, 3] in [-1, 1]; returns {'logits': [N, 1008],
    'pool_3': [N, 1, 1, FAKE_FEATURES]}, fixed random projections of the 8x8-pooled image.
    """

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.to_logits = tf.constant(rng.normal(0, 0.5, (192, 1008)).astype(np.float32))
        self.to_pool = tf.constant(
            rng.normal(0, 0.1, (192, FAKE_FEATURES)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
    def __call__(self, images):
        pooled = tf.reshape(tf.image.resize(images, [8, 8], method="area"), [-1, 192])
        return {"logits": pooled @ self.to_logits,
                "pool_3": tf.reshape(tf.nn.relu(pooled @ self.to_pool),
                                     [-1, 1, 1, FAKE_FEATURES])}


@pytest.fixture(scope="session")
def fake_inception_dir(tmp_path_factory):
    """A directory holding the fake Inception as a SavedModel, loadable by hub.load."""
    path = str(tmp_path_factory.mktemp("inception"))
    tf.saved_model.save(FakeInception(), path)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory, worker_id):
    """One cache for the whole session, shared by the workers of ``pytest -n`` (their
    temporary folders have one parent): the digits classifier and the real images'
    features are computed once. A test that asserts what the cache holds uses
    ``private_cache``."""
    if worker_id == "master":  # one process: pytest without -n
        return str(tmp_path_factory.mktemp("cache"))
    shared = tmp_path_factory.getbasetemp().parent / "shared-cache"
    shared.mkdir(exist_ok=True)  # the classifier's own lock lets one worker train it
    return str(shared)


def made_once(tmp_path_factory, worker_id, name, make):
    """A folder ``make(path)`` fills once per test session, shared by the workers of
    ``pytest -n`` (the first to ask makes it under a file lock, the others wait for it);
    returns its path. For what a module's tests only read, as a module fixture would
    otherwise be set up again in every worker that runs one of them."""
    if worker_id == "master":  # one process: pytest without -n
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    import fcntl
    folder = tmp_path_factory.getbasetemp().parent / name
    with open(f"{folder}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        made = folder / ".made"
        if not made.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed half-way
            folder.mkdir()
            make(folder)
            made.touch()
    return folder


def classifier_only_cache(cache_dir: str, folder) -> str:
    """Makes ``folder`` a cache holding only ``cache_dir``'s trained digits classifier
    (training it there first if needed); returns its path."""
    import glob

    from tfgan_exp.evaluation.classifiers import DigitsClassifier
    DigitsClassifier(cache_dir)  # trained once for the session, else loaded
    os.makedirs(folder)
    for path in glob.glob(os.path.join(cache_dir, "digits_classifier_*")):
        shutil.copy(path, folder)
    return str(folder)


@pytest.fixture
def private_cache(cache_dir, tmp_path):
    """A cache of the test's own, holding the session's trained digits classifier only."""
    return classifier_only_cache(cache_dir, tmp_path / "private-cache")


@pytest.fixture
def online(monkeypatch):
    """Stands in for a machine that can reach the TFDS download hosts.

    Used with ``tfds.testing.mock_data``, which stands in for the downloaded files: the
    loader checks the hosts of a dataset that is not prepared before TFDS downloads it.
    """
    from tfgan_exp import data
    monkeypatch.setattr(data, "unreachable_hosts", lambda urls, timeout=10.0: [])
