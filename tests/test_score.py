"""The score command: good sets are scored, bad ones get a message naming the problem."""
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_command
from tfgan_exp.config import UsageError
from tfgan_exp.evaluation.score import load_image_set

RNG = np.random.default_rng(0)


def save(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return str(path)


def bad_sets(tmp_path):
    """(path, message) for each kind of bad input."""
    not_array = tmp_path / "notes.npy"
    not_array.write_text("hello")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    return [
        (str(tmp_path / "missing.npy"), "no such file or directory"),
        (str(not_array), "not a .npy/.npz array"),
        (str(empty_dir), "a folder with no .png files"),
        (save(tmp_path, "flat.npy", RNG.integers(0, 255, (20, 32, 32), dtype=np.uint8)),
         "expected N x H x W x C"),
        (save(tmp_path, "gray.npy", RNG.integers(0, 255, (20, 32, 32, 1), dtype=np.uint8)),
         "1 channel(s)"),
        (save(tmp_path, "range.npy", RNG.uniform(0, 255, (20, 8, 8, 3)).astype(np.float32)),
         "float images must lie in [-1, 1]"),
        (save(tmp_path, "int.npy", RNG.integers(0, 255, (20, 8, 8, 3)).astype(np.int64)),
         "dtype int64"),
        (save(tmp_path, "few.npy", RNG.integers(0, 255, (9, 8, 8, 3), dtype=np.uint8)),
         "9 images; at least 10"),
    ]


def test_each_bad_set_is_named(tmp_path):
    for path, message in bad_sets(tmp_path):
        with pytest.raises(UsageError) as error:
            load_image_set(path)
        assert message in str(error.value), (path, str(error.value))


def test_good_sets_load_as_floats_in_range(tmp_path):
    uint8 = RNG.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    loaded = load_image_set(save(tmp_path, "u.npy", uint8))
    assert loaded.dtype == np.float32 and loaded.min() >= -1 and loaded.max() <= 1
    np.savez(tmp_path / "z.npz", images=uint8, labels=np.arange(12))
    np.testing.assert_array_equal(load_image_set(str(tmp_path / "z.npz")), loaded)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(uint8):
        tf.io.write_file(str(folder / f"{i:02d}.png"), tf.io.encode_png(image))
    np.testing.assert_array_equal(load_image_set(str(folder)), loaded)


@pytest.mark.slow
def test_command_prints_json_last_and_rejects_bad_input(tmp_path, fake_inception_dir):
    pixels = RNG.integers(0, 256, (45, 32, 32, 3), dtype=np.uint8)
    images = save(tmp_path, "fake.npy", pixels[:30])
    # A larger reference is cut to a random subset as large as the scored set.
    larger = save(tmp_path, "reference.npy", pixels)
    ok = run_command("-m", "tfgan_exp.score", images, f"--reference={larger}",
                     f"--inception_model={fake_inception_dir}")
    assert ok.returncode == 0, ok.stderr
    record = json.loads(ok.stdout.strip().splitlines()[-1])
    assert set(record) == {"inception_score", "inception_score_mean_10",
                           "inception_score_std_10", "fid", "kid", "kid_std", "precision",
                           "recall", "num_images", "num_reference"}
    assert record["num_images"] == record["num_reference"] == 30
    assert record["fid"] > 0.01  # 30 of 45 in random order: not the scored set itself
    assert "against 30 reference images" in ok.stdout
    assert "inception score (all images)" in ok.stdout and "precision, recall" in ok.stdout
    gray = save(tmp_path, "gray.npy", RNG.integers(0, 256, (30, 32, 32, 1), dtype=np.uint8))
    bad = run_command("-m", "tfgan_exp.score", gray, f"--inception_model={fake_inception_dir}")
    assert bad.returncode == 2 and "1 channel(s)" in bad.stderr
    assert "Traceback" not in bad.stderr
    none = run_command("-m", "tfgan_exp.score")
    assert none.returncode == 2 and "give exactly one IMAGES path" in none.stderr
