"""``advlab attack`` and ``advlab evaluate`` on a single-logit binary classifier (digit >= 5 on 8x8 digits).

The network is handed to the commands as a user would: a ``torch.export`` program for ``--model`` and an ``.npz`` of its
images and 0/1 labels for ``--data``. Its (N, 1) output is read as two classes with logits ``[0, z]``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advlab.cli import main
from model_matrix import matrix_model


@pytest.fixture
def single_logit_files(tmp_path):
    case = matrix_model("single_logit")
    net = case.fresh().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (case.x[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    np.savez(tmp_path / "data.npz", x=case.x.numpy(), y=case.y.numpy())
    return tmp_path


def test_attack_command_on_a_single_logit_model(single_logit_files, tmp_path):
    files, out = single_logit_files, tmp_path / "a"
    argv = ["attack", "--model", str(files / "net.pt2"), "--data", str(files / "data.npz"), "--attack", "pgd"]
    assert main([*argv, "--eps", "0.3", "--steps", "10", "--n", "8", "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["clean_accuracy"] == 1.0
    assert 0.0 < res["attack_success_rate"] <= 1.0
    assert res["robust_accuracy"] == pytest.approx(1.0 - res["attack_success_rate"])
    assert (out / "examples.png").exists()


def test_evaluate_command_on_a_single_logit_model(single_logit_files, tmp_path):
    files, out = single_logit_files, tmp_path / "e"
    argv = ["evaluate", "--model", str(files / "net.pt2"), "--data", str(files / "data.npz"), "--eps", "0.1,0.3"]
    assert main([*argv, "--preset", "fast", "--n", "8", "--no-checks", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["clean_accuracy"] == 1.0 and report["n"] == 8
    assert report["results"][-1]["robust_accuracy"] <= report["results"][0]["robust_accuracy"]
    assert (out / "report.html").exists()
