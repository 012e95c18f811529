"""The one checkpoint mechanism: atomic, keyed by configuration, refusing another configuration by name."""

from __future__ import annotations

import pytest
import torch

from advlab.checkpoint import Checkpoint


def test_round_trip_of_tensors_and_state(tmp_path):
    ckpt = Checkpoint(tmp_path / "run", {"eps": [0.1, 0.3], "seed": 0})
    assert ckpt.load() is None
    ckpt.save({"mask": torch.tensor([True, False]), "x": torch.arange(6.0).reshape(2, 3)}, {"done": False, "n": 2})
    saved = Checkpoint(tmp_path / "run", {"seed": 0, "eps": [0.1, 0.3]}).load()  # key order does not matter
    assert saved is not None and saved.state == {"done": False, "n": 2}
    assert torch.equal(saved.tensors["x"], torch.arange(6.0).reshape(2, 3))
    assert saved.tensors["mask"].tolist() == [1, 0]  # booleans come back as uint8
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["state.safetensors"]  # no temporary file left


def test_another_configuration_is_refused_naming_what_differs(tmp_path):
    Checkpoint(tmp_path, {"eps": 0.3, "seed": 0}).save({}, {"done": True})
    with pytest.raises(ValueError, match=r"checkpoint_dir: .* another configuration \(differs in: seed\)"):
        Checkpoint(tmp_path, {"eps": 0.3, "seed": 1}).load()
    with pytest.raises(ValueError, match="^--out: "):
        Checkpoint(tmp_path, {"eps": 0.3, "seed": 1}, argument="--out").load()
    assert Checkpoint(tmp_path, {"eps": 0.3, "seed": 1}, overwrite=True).load() is None


def test_a_foreign_file_is_refused_clearly(tmp_path):
    (tmp_path / "state.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable advlab checkpoint"):
        Checkpoint(tmp_path, {}).load()


def test_no_directory_means_no_checkpoint(tmp_path):
    ckpt = Checkpoint(None, {"a": 1})
    ckpt.save({"x": torch.zeros(1)}, {})
    assert ckpt.load() is None and ckpt.path is None


def test_overwrite_discards_an_unreadable_file(tmp_path):
    (tmp_path / "state.safetensors").write_bytes(b"not a checkpoint")
    assert Checkpoint(tmp_path, {}, overwrite=True).load() is None
