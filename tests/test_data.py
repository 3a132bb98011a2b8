"""Datasets through the real loading code (TFDS mocked, no download) and the batch stream."""
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfgan_exp import data
from tfgan_exp.config import UsageError


def test_digits_are_bundled_and_upsampled():
    images = data.load_images("digits", 16)
    assert images.shape == (1797, 16, 16, 1) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() >= 250  # full [0, 255] range used


@pytest.mark.parametrize("dataset, size, native", [("cifar10", 32, 32), ("stl10", 48, 96),
                                                   ("stl10", 96, 96)])
def test_tfds_datasets_load_through_the_real_code(tmp_path, online, dataset, size, native):
    name, split, _ = data.TFDS_SOURCES[dataset]
    with tfds.testing.mock_data(num_examples=20, data_dir=str(tmp_path)):
        images = data.load_images(dataset, size, str(tmp_path))
    assert images.shape == (20, size, size, 3) and images.dtype == np.uint8
    assert name == dataset and split == {"cifar10": "train", "stl10": "unlabelled"}[dataset]


def test_a_tfds_dataset_that_cannot_be_had_is_a_usage_error(tmp_path, monkeypatch):
    def no_network(self, *args, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    with pytest.raises(UsageError, match="(?s)cannot load the TFDS dataset 'cifar10'.*--data_dir"):
        data.load_images("cifar10", 32, str(tmp_path))


def no_proxy(monkeypatch):
    for name in data.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_an_unreachable_download_host_is_reported_before_tfds_retries(tmp_path, monkeypatch):
    # TFDS would retry for minutes; the loader names the hosts it cannot reach at once.
    no_proxy(monkeypatch)
    monkeypatch.setattr(tfds.image_classification.Cifar10, "url_infos",
                        {"https://tfds-host.invalid/cifar-10-binary.tar.gz": None})
    monkeypatch.setattr(data, "TFDS_GCS_URL", "https://tfds-gcs.invalid/tfds-data")
    with pytest.raises(UsageError, match="(?s)not prepared there.*cannot connect to "
                                         "tfds-host.invalid:443 .* or tfds-gcs.invalid:443"
                                         ".*--data_dir=DIR"):
        data.load_images("cifar10", 32, str(tmp_path))
    assert not (tmp_path / "downloads").exists()


def test_a_reachable_tfds_bucket_is_enough_to_try_the_download(tmp_path, monkeypatch):
    # TFDS copies prepared data from its bucket before it tries the source, so a machine
    # that reaches only the bucket (a cloud VM, say) must be let through to TFDS.
    no_proxy(monkeypatch)

    def download(self, *args, **kwargs):
        raise ConnectionError("the download itself was tried")

    monkeypatch.setattr(tfds.image_classification.Cifar10, "url_infos",
                        {"https://tfds-host.invalid/cifar-10-binary.tar.gz": None})
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download)
    with socket.create_server(("127.0.0.1", 0)) as bucket:
        monkeypatch.setattr(data, "TFDS_GCS_URL",
                            f"http://127.0.0.1:{bucket.getsockname()[1]}/tfds-data")
        with pytest.raises(UsageError, match="the download itself was tried"):
            data.load_images("cifar10", 32, str(tmp_path))


def test_host_check_connects_for_real(monkeypatch):
    no_proxy(monkeypatch)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert data.unreachable_hosts([f"http://127.0.0.1:{port}/data.tar.gz"]) == []
    (problem,) = data.unreachable_hosts([f"http://127.0.0.1:{port}/data.tar.gz",
                                         f"http://127.0.0.1:{port}/other.tar.gz"])
    assert problem.startswith(f"127.0.0.1:{port} (")  # closed now; one entry per host
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert data.unreachable_hosts([f"http://127.0.0.1:{port}/data.tar.gz"]) == []


def test_float_conversions_round_trip():
    pixels = np.arange(256, dtype=np.uint8)
    as_float = data.to_float(tf.constant(pixels)).numpy()
    assert as_float.min() == -1.0 and as_float.max() == 1.0
    np.testing.assert_array_equal(data.to_uint8(as_float), pixels)


def make_batches(n=100, batch=8, d_steps=2, seed=3):
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 8, 8, 1), np.uint8)
    return data.TrainingBatches(images, batch, d_steps, latent_dim=4, seed=seed)


def test_each_epoch_is_a_permutation_without_repeats():
    batches = make_batches()
    assert batches.steps_per_epoch == 100 // 16
    seen = [batches(s)["images"][:, :, 0, 0, 0] for s in range(batches.steps_per_epoch)]
    ids = np.concatenate([s.T.ravel() for s in seen])
    assert len(set(ids.tolist())) == len(ids) == 96  # drop_remainder: 4 left out
    next_epoch = batches(batches.steps_per_epoch)["images"][:, 0, 0, 0, 0]
    assert not np.array_equal(next_epoch, seen[0][:, 0])  # reshuffled each epoch


def test_a_step_depends_only_on_seed_and_step():
    a, b, other = make_batches(), make_batches(), make_batches(seed=4)
    for key in ("images", "z_d", "z_g", "gp_eps"):
        np.testing.assert_array_equal(a(7)[key], b(7)[key])
    assert not np.array_equal(a(7)["z_g"], other(7)["z_g"])
    assert not np.array_equal(a(7)["z_g"], a(8)["z_g"])


def test_dataset_has_static_shapes_and_resumes_mid_stream():
    batches = make_batches()
    dataset = batches.dataset(5, 9)
    spec = dataset.element_spec
    assert spec["images"].shape == (8, 2, 8, 8, 1) and spec["z_d"].shape == (8, 2, 4)
    assert spec["z_g"].shape == (8, 4) and spec["gp_eps"].shape == (8, 2)
    elements = list(dataset)
    assert len(elements) == 4
    np.testing.assert_array_equal(elements[0]["z_g"].numpy(), batches(5)["z_g"])


def test_too_few_images_for_one_step_is_a_usage_error():
    with pytest.raises(UsageError, match="images per step"):
        make_batches(n=10, batch=8, d_steps=2)


def test_tfds_download_code_can_run(tmp_path):
    # Downloading a dataset first asks where its builder's code lives, which imports
    # importlib_resources: a dependency TFDS uses but does not declare (requirements.txt).
    builder = tfds.builder("cifar10", data_dir=str(tmp_path))
    assert str(builder.code_path).endswith("cifar.py")


def test_prepare_readies_each_dataset_once_and_refuses_unknown_ones(tmp_path, online,
                                                                     fake_inception_dir,
                                                                     capsys):
    from tfgan_exp.grids import prepare
    with tfds.testing.mock_data(num_examples=20, data_dir=str(tmp_path)):
        prepare.prepare(["cifar10", "digits"], str(tmp_path), fake_inception_dir)
    said = capsys.readouterr().err
    assert "cifar10: 20 training images ready" in said
    assert "digits: 1797 training images ready" in said
    with pytest.raises(UsageError, match="--dataset=mnist: choose from digits"):
        prepare.prepare(["mnist"], str(tmp_path), "none")
