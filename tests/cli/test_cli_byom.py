"""Bring your own model on the command line: a user's network as a .py file with weights, a torch.export program
and a TorchScript file, attacked and evaluated from the CLI with the numbers of attacking the original module
in Python; ``advlab import`` and then every command on the folder; refusals in one line."""

from __future__ import annotations

import json

import pytest
import torch

from advlab import Classifier
from advlab.attacks import PGD, attack_in_batches
from advlab.cli import main
from advlab.data import load_dataset
from advlab.evaluation import evaluate
from advlab.threat import ThreatModel

N = 64
EPS = 0.1


def _forms(m):
    """The same network, as ``--model ... [options]`` arguments."""
    return {
        "py+safetensors": [m["spec"], "--weights", str(m["safetensors"])],
        "py+state_dict": [m["spec"], "--weights", str(m["state_dict"])],
        "exported": [str(m["exported"])],
        "torchscript": [str(m["scripted"]), "--input-shape", "1,8,8"],
        "torchscript+data": [str(m["traced"])],  # the input shape of --data digits
    }


FORMS = ["py+safetensors", "py+state_dict", "exported", "torchscript", "torchscript+data"]


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1]
    for needle in needles:
        assert needle in last, (needle, err)
    return last


@pytest.fixture(scope="module")
def python_attack(user_model):
    """PGD on the original module in Python: the numbers every form must give from the CLI."""
    data = load_dataset("digits", split="test", n=N)
    model = Classifier(user_model["net"], num_classes=10, input_shape=(1, 8, 8))
    r = attack_in_batches(PGD(steps=5), model, data.x, data.y, ThreatModel("linf", EPS), batch_size=250, seed=0)
    with torch.no_grad():
        clean = model(data.x).argmax(1) == data.y
    robust = clean & (r.logits.argmax(1) == data.y)
    return float(clean.double().mean()), float(robust.double().mean())


@pytest.mark.parametrize("form", FORMS)
def test_attack_any_form_gives_the_python_numbers(user_model, python_attack, form, tmp_path):
    model_args = _forms(user_model)[form]
    argv = ["attack", "--model", *model_args, "--data", "digits", "--attack", "pgd", "--steps", "5"]
    assert main([*argv, "--eps", str(EPS), "--n", str(N), "--quiet", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "result.json").read_text())
    clean, robust = python_attack
    assert 0 < robust < clean  # the attack does something, and not everything
    assert res["clean_accuracy"] == clean and res["robust_accuracy"] == robust
    assert res["model"]["card"]["num_classes"] == 10 and res["model"]["card"]["input_shape"] == [1, 8, 8]


@pytest.fixture(scope="module")
def python_evaluation(user_model):
    data = load_dataset("digits", split="test", n=32)
    model = Classifier(user_model["net"], num_classes=10, input_shape=(1, 8, 8))
    report = evaluate(model, data, [0.05, EPS], attacks="fast", checks=False, progress=False)
    return [r["robust_accuracy"] for r in report.to_dict()["results"]]


@pytest.mark.parametrize("form", ["py+safetensors", "exported", "torchscript"])
def test_evaluate_fast_any_form_gives_the_python_numbers(user_model, python_evaluation, form, tmp_path):
    argv = ["evaluate", "--model", *_forms(user_model)[form], "--data", "digits", "--eps", f"0.05,{EPS}"]
    assert main([*argv, "--n", "32", "--preset", "fast", "--no-checks", "--quiet", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["robust_accuracy"] for r in report["results"]] == python_evaluation
    assert report["model_card"]["network"]["kind"] in ("python", "exported", "torchscript")


def test_evaluate_fast_with_its_checks(user_model, tmp_path):
    argv = ["evaluate", "--model", user_model["spec"], "--weights", str(user_model["safetensors"]), "--data", "digits"]
    assert main([*argv, "--eps", str(EPS), "--n", "16", "--preset", "fast", "--quiet", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["checks"] and 0.0 <= report["results"][0]["robust_accuracy"] < 1.0


# ---------------------------------------------------------------------- advlab import, then every command
@pytest.fixture(scope="module")
def imported(user_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "mine"
    argv = ["import", user_model["spec"], "--weights", str(user_model["state_dict"]), "--data", "digits"]
    assert main([*argv, "--classes", ",".join(f"d{i}" for i in range(10)), "--out", str(out)]) == 0
    return out


def test_import_writes_a_model_folder(imported, user_model):
    card = json.loads((imported / "card.json").read_text())
    assert sorted(p.name for p in imported.iterdir()) == ["card.json", "model.safetensors", "network.py"]
    assert card["dataset"] == "digits" and card["input_shape"] == [1, 8, 8] and card["num_classes"] == 10
    assert card["classes"][3] == "d3" and card["network"]["name"] == "ResBNNet"
    assert (imported / "network.py").read_text() == user_model["source"].read_text()


def test_import_every_form(user_model, tmp_path):
    for i, (form, model_args) in enumerate(_forms(user_model).items()):
        out = tmp_path / str(i)
        assert main(["import", *model_args, "--data", "digits", "--out", str(out)]) == 0, form
        assert json.loads((out / "card.json").read_text())["network"]["file"].startswith("network.")


COMMANDS = {
    "attack": (["--eps", "0.1", "--n", "8", "--steps", "2"], "result.json"),
    "evaluate": (["--eps", "0.1", "--n", "8", "--preset", "fast", "--no-checks"], "report.json"),
    "physical": (["--eps", "0.1", "--n", "8", "--attacks", "fgsm"], "result.json"),
    "universal": (["--eps", "0.1", "--n", "8", "--n-train", "8", "--max-passes", "1"], "result.json"),
    "patch": (["--target", "1", "--n", "8", "--n-train", "8", "--epochs", "1"], "result.json"),
    "fooling": (["--steps", "2"], "result.json"),
    "explain": (["--n", "8"], "explain.html"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_on_the_imported_folder(imported, command, tmp_path):
    extra, written = COMMANDS[command]
    quiet = [] if command == "explain" else ["--quiet"]
    assert main([command, "--model", str(imported), *extra, *quiet, "--out", str(tmp_path)]) == 0
    assert (tmp_path / written).is_file()


def test_transfer_and_blackbox_on_the_imported_folder(imported, tmp_path):
    argv = ["transfer", "--models", f"{imported},lr", "--data", "digits", "--n", "8", "--eps", "0.1"]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 0
    argv = ["blackbox", "--target", str(imported), "--data", "digits", "--seed-size", "10", "--n-eval", "8"]
    assert main([*argv, "--rounds", "1", "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "result.json").read_text())["target"]["card"]["network"]["kind"] == "python"


def test_serve_the_imported_folder_and_a_program(imported, user_model, monkeypatch):
    import warnings

    import advlab.blackbox.server as server

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient may warn about its httpx backend
        from starlette.testclient import TestClient

    apps = []
    monkeypatch.setattr(server, "serve", lambda app, **kwargs: apps.append(app))
    assert main(["serve", "--model", str(imported), "--mode", "labels"]) == 0
    assert main(["serve", "--model", str(user_model["exported"]), "--mode", "labels"]) == 0
    x = load_dataset("digits", split="test", n=10).x
    with torch.no_grad():
        expected = user_model["net"](x).argmax(1).tolist()
    for app in apps:
        with TestClient(app) as client:
            assert client.get("/info").json()["num_classes"] == 10
            answer = client.post("/predict", json={"inputs": x.tolist()}).json()
            assert answer["labels"] == expected


def test_explain_compares_with_a_program(imported, user_model, tmp_path):
    argv = ["explain", "--model", str(imported), "--compare", str(user_model["exported"]), "--n", "8"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "explain.json").read_text())


# ---------------------------------------------------------------------- refusals, one line each
def test_pickled_model_is_refused(user_model, tmp_path, capsys):
    rc = main(
        ["attack", "--model", str(user_model["pickle"]), "--data", "digits", "--eps", "0.1", "--out", str(tmp_path)]
    )
    _one_line_error(capsys, rc, "--model: ", str(user_model["pickle"]), "whole pickled model", "state_dict()")
    argv = ["attack", "--model", user_model["spec"], "--weights", str(user_model["pickle"]), "--data", "digits"]
    rc = main([*argv, "--eps", "0.1", "--out", str(tmp_path)])
    _one_line_error(capsys, rc, "--weights: ", str(user_model["pickle"]), "whole pickled model")


def test_state_dict_as_model_says_what_to_do(user_model, tmp_path, capsys):
    rc = main(["evaluate", "--model", str(user_model["state_dict"]), "--eps", "0.1", "--out", str(tmp_path)])
    _one_line_error(capsys, rc, "--model: ", "a state_dict", "--model path/to/nets.py:Net --weights w.pt")


def test_unreadable_model_file(tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)))
    rc = main(["attack", "--model", str(path), "--eps", "0.1", "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, f"--model: {path} is a binary file of unknown format; expected an advlab model")


def test_card_options_are_checked_by_name(user_model, imported, tmp_path, capsys):
    base = ["attack", "--model", str(user_model["exported"]), "--eps", "0.1", "--out", str(tmp_path)]
    _one_line_error(capsys, main([*base, "--mean", "0.5"]), "--model: ", "mean/std: give both")
    _one_line_error(capsys, main([*base, "--bounds", "1,0"]), "--bounds: expected low < high")
    _one_line_error(capsys, main([*base, "--input-shape", "1,eight,8"]), "--input-shape: expected whole numbers")
    _one_line_error(capsys, main([*base, "--num-classes", "7"]), "num_classes is 7 but the network outputs 10")
    folder = ["attack", "--model", str(imported), "--mean", "0.5", "--std", "0.2", "--eps", "0.1"]
    _one_line_error(capsys, main([*folder, "--out", str(tmp_path)]), "card.json already says what mean, std would")


def test_model_help_says_what_is_accepted(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a torch.export program (.pt2), a TorchScript file, or a Python factory with --weights" in text
    assert "--weights FILE" in text and "--input-shape C,H,W" in text and "NAME.advlab.json" in text


def test_unbounded_features_from_the_command_line(tmp_path):
    """A user's tabular network with --bounds=-inf,inf on a CSV: the README's example, end to end."""
    import csv

    import numpy as np
    import torch

    torch.manual_seed(0)
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\n\nclass TabularNet(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))\n\n"
        "    def forward(self, x):\n        return self.body(x)\n"
    )
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    torch.save({f"body.{k}": v for k, v in net.state_dict().items()}, tmp_path / "w.pt")
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32) * 3  # beyond [0, 1] on both sides
    y = net(torch.from_numpy(x)).argmax(1).numpy()  # the network is right on every example
    with open(tmp_path / "features.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["a", "b", "c", "d", "churn"])
        writer.writerows([*row, int(label)] for row, label in zip(x, y))
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", f"{tmp_path / 'nets.py'}:TabularNet", "--weights", str(tmp_path / "w.pt")]
    argv += ["--bounds=-inf,inf", "--data", str(tmp_path / "features.csv"), "--label-column", "churn"]
    assert main([*argv, "--norm", "l2", "--eps", "0.5,50", "--preset", "fast", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 30 and report["clean_accuracy"] == 1.0  # the default --n takes all 30 rows
    assert report["bounds"] == [float("-inf"), float("inf")] or report["bounds"][0] < -1e300
    assert report["results"][-1]["robust_accuracy"] == 0.0  # an l2 radius of 50 reaches any class of 4 features
