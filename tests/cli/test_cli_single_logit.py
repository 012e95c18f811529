"""``advlab attack`` and ``advlab evaluate`` on a single-logit binary classifier (digit >= 5 on 8x8 digits).

The commands load models and data through ``load_model`` / ``load_split``; a single-logit network is not a zoo
architecture, so the test hands the commands the model and a two-class dataset through those two names (what
``--model`` with a user's own network and ``--data`` with a user's file give them). Everything after loading, the
part that has to know about the single logit, runs as on the command line.
"""

from __future__ import annotations

import json

import pytest

import advlab.cli.attack as attack_cmd
import advlab.cli.evaluate as evaluate_cmd
import advlab.zoo
from advlab import Classifier
from advlab.cli import main
from advlab.data import Dataset
from model_matrix import matrix_model


@pytest.fixture
def single_logit_cli(monkeypatch):
    case = matrix_model("single_logit")
    model = Classifier(case.fresh(), input_shape=(1, 8, 8), card={"dataset": "digits-binary"}).eval()
    data = Dataset(case.x, case.y, name="digits-binary", split="test", classes=("0-4", "5-9"), mean=(0.3,), std=(0.4,))
    monkeypatch.setattr(attack_cmd, "load_model", lambda path, device=None: model)
    monkeypatch.setattr(advlab.zoo, "load_model", lambda path, device=None: model)
    for module in (attack_cmd, evaluate_cmd):
        monkeypatch.setattr(module, "load_split", lambda name, split, data_dir, n, option="--n": data)
    monkeypatch.setattr(
        "advlab.evaluation.engine.provenance", lambda **extra: {"versions": {}, "git_commit": None, **extra}
    )
    return case


def test_attack_command_on_a_single_logit_model(single_logit_cli, tmp_path):
    out = tmp_path / "a"
    argv = ["attack", "--model", "m", "--attack", "pgd", "--eps", "0.3", "--steps", "10", "--n", "8"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["clean_accuracy"] == 1.0
    assert 0.0 < res["attack_success_rate"] <= 1.0
    assert res["robust_accuracy"] == pytest.approx(1.0 - res["attack_success_rate"])
    assert (out / "examples.png").exists()


def test_evaluate_command_on_a_single_logit_model(single_logit_cli, tmp_path):
    out = tmp_path / "e"
    argv = ["evaluate", "--model", "m", "--eps", "0.1,0.3", "--preset", "fast", "--n", "8", "--no-checks"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["clean_accuracy"] == 1.0 and report["n"] == 8
    assert report["results"][-1]["robust_accuracy"] <= report["results"][0]["robust_accuracy"]
    assert (out / "report.html").exists()
