"""Atomic writes: content, no temporary files left behind, usual permissions, old file kept on failure."""

from __future__ import annotations

import os

import pytest

from advlab import io


def test_write_json_roundtrip_and_permissions(tmp_path):
    path = io.write_json(tmp_path / "sub" / "a.json", {"x": 1.5, "n": [1, 2]})
    assert io.read_json(path) == {"x": 1.5, "n": [1, 2]}
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = io.write_text(tmp_path / "r.txt", "old")

    def boom(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        io.atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_read_json_names_corrupt_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="bad.json"):
        io.read_json(bad)
