"""atomic_open: the target is replaced whole on success and untouched on failure."""
import os

import pytest

from vp_jax.files import atomic_open


def test_finished_block_replaces_the_target_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "out.json"
    with atomic_open(str(path)) as f:
        f.write("new")
    assert path.read_text() == "new"
    assert os.listdir(path.parent) == ["out.json"]


def test_failing_block_keeps_the_old_target_and_removes_the_temporary_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(str(path), "wb") as f:
            f.write(b"half")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
