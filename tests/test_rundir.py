"""The run directory's file writing: whole files only, even with several writers."""
import os

import pytest

from tfgan_exp.rundir import written_atomically


def test_two_writers_of_one_file_at_once_both_finish_with_a_whole_file(tmp_path):
    # The workers of a multi-worker run fill the same shared stats cache at the same
    # moment; this interleaving (one opens, the other writes and renames, the first
    # renames) once failed with FileNotFoundError when both used the same temporary name.
    path = str(tmp_path / "stats.npz")
    with written_atomically(path, suffix=".npz") as first:
        with written_atomically(path, suffix=".npz") as second:
            assert first != second
            with open(second, "w") as f:
                f.write("second")
        with open(first, "w") as f:
            f.write("first")
    with open(path) as f:
        assert f.read() == "first"
    assert os.listdir(tmp_path) == ["stats.npz"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with written_atomically(str(path)) as temporary:
            with open(temporary, "w") as f:
                f.write("half")
            raise RuntimeError("writer died")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["config.json"]
