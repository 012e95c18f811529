"""End-to-end CLI: train -> attack on digits, result.json checked against an independent recomputation."""

from __future__ import annotations

import json

import pytest
import torch

from advlab.cli import COMMANDS, main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "m"
    rc = main(
        ["train", "--data", "digits", "--arch", "mlp", "--epochs", "8", "--lr", "0.003", "--quiet", "--out", str(out)]
    )
    assert rc == 0
    return out


def test_help_for_every_command(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text, name


def test_help_examples_parse(capsys):
    # every example command line printed by --help is accepted by the parser as written
    import shlex

    from advlab.cli import build_parser

    parser = build_parser()
    checked = 0
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out.split("examples:", 1)[1].replace("\\\n", " ")  # join continued lines
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("advlab ") and not any(ch in line for ch in "|>&;"):
                parser.parse_args(shlex.split(line, comments=True)[1:])
                checked += 1
    assert checked >= len(COMMANDS)


def test_train_writes_card_and_weights(trained):
    card = json.loads((trained / "card.json").read_text())
    assert card["arch"] == "mlp" and card["dataset"] == "digits"
    assert card["training"]["defense"] == "standard"
    assert len(card["training"]["history"]) == 8
    assert card["accuracy"]["test"] > 0.9
    assert (trained / "model.safetensors").exists()


def test_attack_result_matches_recomputation(trained, tmp_path):
    out = tmp_path / "a"
    rc = main(
        [
            "attack",
            "--model",
            str(trained),
            "--attack",
            "pgd",
            "--eps",
            "0.1",
            "--n",
            "200",
            "--steps",
            "10",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert (out / "examples.png").stat().st_size > 1000
    for key in (
        "clean_accuracy",
        "robust_accuracy",
        "attack_success_rate",
        "wall_seconds",
        "mean_confidence_adversarial",
    ):
        assert isinstance(res[key], float), key
    assert res["attack"]["settings"]["steps"] == 10
    assert res["provenance"]["versions"]["torch"] == torch.__version__

    # Independent recomputation with the Python API on the same images and seed.
    from advlab.attacks import PGD, attack_in_batches
    from advlab.data import load_dataset
    from advlab.threat import ThreatModel
    from advlab.zoo import load_model

    model = load_model(trained)
    data = load_dataset("digits", split="test", n=200)
    r = attack_in_batches(PGD(steps=10), model, data.x, data.y, ThreatModel("linf", 0.1), batch_size=250, seed=0)
    clean = model.predict(data.x) == data.y
    robust = clean & (r.logits.argmax(1) == data.y)
    assert res["clean_accuracy"] == pytest.approx(float(clean.float().mean()))
    assert res["robust_accuracy"] == pytest.approx(float(robust.float().mean()))
    assert res["perturbation"]["linf_all"]["max"] <= 0.1 + 1e-6
    assert res["robust_accuracy"] < res["clean_accuracy"]


def test_targeted_attack_cli(trained, tmp_path):
    rc = main(
        [
            "attack",
            "--model",
            str(trained),
            "--attack",
            "bim",
            "--eps",
            "0.3",
            "--n",
            "50",
            "--target",
            "3",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["goal"] == "targeted"
    assert res["n"] == 50 - int(
        (__import__("advlab.data", fromlist=["x"]).load_dataset("digits", "test", n=50).y == 3).sum()
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attack", "--model", "/nonexistent/model", "--eps", "0.1", "--out", "x"], "nonexistent"),
        (["attack", "--model", "{m}", "--eps", "-0.1", "--out", "{o}"], "eps"),
        (["attack", "--model", "{m}", "--eps", "0.1", "--attack", "pgdd", "--out", "{o}"], "pgd"),
        (["attack", "--model", "{m}", "--eps", "0.1", "--attack", "mifgsm", "--norm", "l1", "--out", "{o}"], "l1"),
        (["attack", "--model", "{m}", "--eps", "0.1", "--set", "nosuch=1", "--out", "{o}"], "nosuch"),
        (["train", "--data", "digits", "--arch", "nosuch", "--out", "{o}"], "nosuch"),
        (["train", "--data", "nosuch", "--out", "{o}"], "nosuch"),
    ],
)
def test_bad_input_is_one_clear_line(trained, tmp_path, capsys, argv, message):
    argv = [a.format(m=trained, o=tmp_path / "o") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert "Traceback" not in err


def test_corrupt_card_is_refused(trained, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained, bad)
    (bad / "card.json").write_text("{not json")
    assert main(["attack", "--model", str(bad), "--eps", "0.1", "--out", str(tmp_path / "o")]) == 2
    assert "card.json" in capsys.readouterr().err


def test_library_warnings_are_one_line_on_the_command_line(monkeypatch, caplog):
    """A ``warnings.warn`` from the library reaches the user as one ``warning: ...`` log line, without Python's
    file:line and source excerpt, and Python's own warning display is back in place after ``main`` returns."""
    import warnings

    import advlab.cli.attacks as attacks_cmd

    def noisy(args):
        warnings.warn("gradient-masking check failed: the model masks its gradients", stacklevel=2)
        warnings.warn("an old option", DeprecationWarning, stacklevel=2)
        return 0

    monkeypatch.setattr(attacks_cmd, "run", noisy)
    before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with caplog.at_level("WARNING", logger="advlab"):
            assert main(["attacks"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "advlab"]
    assert lines == [
        "warning: gradient-masking check failed: the model masks its gradients",
        "warning (DeprecationWarning): an old option",
    ]
    assert warnings.showwarning is before
