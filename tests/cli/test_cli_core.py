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


def test_apgd_steps_from_the_command_line(trained, tmp_path):
    """The setting is called steps everywhere: ``advlab attack --attack apgd --steps 7`` runs APGD with 7 steps."""
    out = tmp_path / "apgd"
    argv = ["attack", "--model", str(trained), "--attack", "apgd", "--steps", "7", "--loss", "dlr"]
    assert main([*argv, "--eps", "0.1", "--n", "20", "--out", str(out)]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["attack"]["settings"] == {"steps": 7, "restarts": 1, "loss": "dlr", "rho": 0.75}
    assert (
        main(["attack", "--model", str(trained), "--attack", "apgd-ce", "--eps", "0.1", "--n", "5", "--out", str(out)])
        == 0
    )
    res = json.loads((out / "result.json").read_text())
    assert res["attack"]["name"] == "apgd-ce" and res["attack"]["attack"] == "apgd"
    assert res["attack"]["settings"]["loss"] == "ce"


@pytest.mark.filterwarnings("default::FutureWarning")
def test_old_option_names_still_work_with_one_warning_line(trained, tmp_path, caplog):
    out = tmp_path / "old"
    with caplog.at_level("WARNING", logger="advlab"):
        assert (
            main(
                [
                    "attack",
                    "--model",
                    str(trained),
                    "--attack",
                    "apgd",
                    "--n-iter",
                    "3",
                    "--eps",
                    "0.1",
                    "--n",
                    "5",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    assert json.loads((out / "result.json").read_text())["attack"]["settings"]["steps"] == 3
    assert any("'n_iter' is now called 'steps'" in r.getMessage() for r in caplog.records)


def test_illc_is_the_least_likely_goal(trained, tmp_path, capsys):
    out = tmp_path / "illc"
    assert (
        main(["attack", "--model", str(trained), "--attack", "illc", "--eps", "0.1", "--n", "10", "--out", str(out)])
        == 0
    )
    assert json.loads((out / "result.json").read_text())["goal"] == "least-likely"
    assert (
        main(["attack", "--model", str(trained), "--attack", "illc", "--targeted", "--eps", "0.1", "--out", str(out)])
        == 2
    )
    assert "--targeted: attack 'illc' fixes its goal" in capsys.readouterr().err


def test_a_setting_the_attack_does_not_have_is_named(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--model", "m", "--attack", "fgsm", "--steps", "3", "--eps", "0.1", "--out", "o"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--steps: attack 'fgsm' has no setting 'steps'; its settings are --loss" in err


def test_attack_help_lists_the_chosen_attack_settings_with_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["attack", "--attack", "square", "--help"])
    text = capsys.readouterr().out
    assert "settings of square (Andriushchenko et al. 2020" in text
    for flag in ("--max-queries", "--p-init", "--restarts", "--focus", "--focus-after"):
        assert flag in text
    assert "(default: 5000)" in text


def test_attacks_name_describes_settings_and_aliases(capsys):
    assert main(["attacks", "apgd"]) == 0
    text = capsys.readouterr().out
    assert "Croce & Hein 2020" in text and "--steps" in text and "(default: 100)" in text
    assert "--n-iter" in text and "old name of --steps" in text
    assert main(["attacks"]) == 0
    text = capsys.readouterr().out
    assert "illc" in text and "goal=least-likely" in text and "apgd-ce" in text
    assert main(["attacks", "illc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "bim"
