"""``advlab train`` in several processes: ``--nproc N`` (and torchrun) train with DistributedDataParallel and give
what one process gives; rank 0 alone writes the model folder; the options of several processes are checked."""

from __future__ import annotations

import json

import pytest
import torch
from _torchrun import on_two_nodes

from advlab.cli import main

pytestmark = pytest.mark.distributed

COMMAND = ["train", "--data", "digits", "--arch", "mlp", "--epochs", "2", "--batch-size", "64", "--quiet"]


def _card(folder):
    return json.loads((folder / "card.json").read_text())


def test_nproc_2_trains_like_one_process_and_rank_0_writes_the_folder(tmp_path):
    assert main([*COMMAND, "--out", str(tmp_path / "one")]) == 0
    assert main([*COMMAND, "--nproc", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = _card(tmp_path / "one"), _card(tmp_path / "two")
    assert one["training"]["processes"] == 1 and two["training"]["processes"] == 2
    losses = [torch.tensor([r["train_loss"] for r in c["training"]["history"]]) for c in (one, two)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)  # see test_ddp_training.py
    assert two["accuracy"]["test"] == pytest.approx(one["accuracy"]["test"], abs=0.01)
    assert (tmp_path / "two" / "checkpoint" / "checkpoint.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_torchrun_on_two_nodes_over_loopback(tmp_path):
    """The documented multi-node command: ``torchrun --nnodes 2 --node-rank R ... -m advlab train`` on each "node"
    (here two torchrun agents on this machine meeting at a c10d rendezvous on loopback), one process each."""
    codes, outputs = on_two_nodes([*COMMAND, "--out", str(tmp_path / "two")], "advlab-test")
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert main([*COMMAND, "--out", str(tmp_path / "one")]) == 0
    one, two = _card(tmp_path / "one"), _card(tmp_path / "two")
    assert two["training"]["processes"] == 2
    losses = [torch.tensor([r["train_loss"] for r in c["training"]["history"]]) for c in (one, two)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)


def test_precision_is_an_option_recorded_in_the_card(tmp_path):
    assert main([*COMMAND, "--epochs", "1", "--precision", "bf16", "--out", str(tmp_path / "m")]) == 0
    assert _card(tmp_path / "m")["training"]["precision"] == "bf16"


def test_options_of_several_processes_are_checked_before_any_process_starts(tmp_path, monkeypatch, capsys):
    assert main([*COMMAND, "--nproc", "2", "--sync-bn", "--device", "cpu", "--out", str(tmp_path / "a")]) == 2
    assert "--sync-bn: PyTorch's SyncBatchNorm synchronises batch statistics on GPUs only" in capsys.readouterr().err
    assert main([*COMMAND, "--nproc", "2", "--set", "nope=1", "--out", str(tmp_path / "b")]) == 2
    assert "has no setting 'nope'" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*COMMAND, "--nproc", "2", "--out", str(tmp_path / "c")]) == 2
    assert "already started by torchrun" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")
