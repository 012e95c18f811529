"""Regression tests from the CLI user-acceptance pass: bad input gives one clear line (exit 2), figures stay readable."""

from __future__ import annotations

import io as _io
import json

import pytest
import torch
from PIL import Image

from advlab.cli import main


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("ua") / "m"
    rc = main(
        ["train", "--data", "digits", "--arch", "mlp", "--epochs", "3", "--lr", "0.003", "--quiet", "--out", str(out)]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def mnist_shaped_model(tmp_path_factory):
    """An untrained 1x28x28 model whose card says mnist: attacking it on digits must be refused cleanly."""
    from advlab.zoo import build_classifier, save_model

    out = tmp_path_factory.mktemp("ua") / "mnist-shaped"
    clf = build_classifier("mlp", input_shape=(1, 28, 28), num_classes=10, mean=[0.5], std=[0.5])
    save_model(clf, out, dataset="mnist")
    return out


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    for needle in needles:
        assert needle in last, (needle, err)
    return last


OUT_COMMANDS = {
    "train": ["--data", "digits", "--arch", "mlp", "--epochs", "1"],
    "attack": ["--model", "{m}", "--eps", "0.1", "--n", "5"],
    "physical": ["--model", "{m}", "--eps", "0.1", "--n", "5"],
    "universal": ["--model", "{m}", "--eps", "0.1", "--n", "5", "--n-train", "5"],
    "patch": ["--model", "{m}", "--target", "1", "--n", "5", "--n-train", "5"],
    "fooling": ["--model", "{m}"],
    "explain": ["--model", "{m}", "--n", "5"],
    "transfer": ["--models", "{m},lr", "--data", "digits", "--n", "5"],
    "blackbox": ["--target", "{m}", "--data", "digits", "--seed-size", "5", "--n-eval", "5"],
    "demo": [],
}


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_out_that_is_a_file_is_refused_before_any_work(command, digits_model, tmp_path, capsys):
    # Was a NotADirectoryError / FileExistsError traceback (exit 1), after the whole run for most commands.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = [command, *[a.format(m=digits_model) for a in OUT_COMMANDS[command]], "--out", str(blocker / "sub")]
    rc = main(argv)
    _one_line_error(capsys, rc, "--out", "is a file")
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["attack", "physical", "explain", "universal", "patch"])
def test_dataset_that_does_not_fit_the_model_is_named(command, mnist_shaped_model, tmp_path, capsys):
    # Was a RuntimeError traceback from conv2d/linear ("expected input ... to have 1 channels ...").
    extra = {
        "attack": ["--eps", "0.1"],
        "physical": ["--eps", "0.1"],
        "explain": [],
        "universal": ["--eps", "0.1", "--n-train", "5"],
        "patch": ["--target", "1", "--n-train", "5"],
    }[command]
    argv = [
        command,
        "--model",
        str(mnist_shaped_model),
        "--data",
        "digits",
        "--n",
        "5",
        *extra,
        "--out",
        str(tmp_path / "o"),
    ]
    rc = main(argv)
    last = _one_line_error(capsys, rc, "--data", "(1, 8, 8)", "(1, 28, 28)", "--data mnist")
    assert last.startswith(f"advlab {command}: error:")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option", ["--batch-size", "--n"])
def test_non_positive_sizes_are_refused_with_the_option_name(option, digits_model, tmp_path, capsys):
    # --batch-size 0 was "error: range() arg 3 must not be zero".
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--model", str(digits_model), "--eps", "0.1", option, "0", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected a whole number >= 1, got 0" in err


def test_train_n_train_error_names_the_option(tmp_path, capsys):
    # Was "n: expected an int >= 1, got -5" (the library's argument name, not the option's).
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "digits", "--n-train", "-5", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "argument --n-train: expected a whole number >= 1, got -5" in capsys.readouterr().err


def _png_size(path):
    with Image.open(path) as im:
        return im.size


def test_attack_examples_png_stays_readable_for_large_n(digits_model, tmp_path, caplog):
    # examples.png had one column per attacked example: 16588 px wide for --n 100.
    sizes = {}
    for n in (8, 60):
        out = tmp_path / f"a{n}"
        with caplog.at_level("INFO", logger="advlab"):
            assert (
                main(
                    [
                        "attack",
                        "--model",
                        str(digits_model),
                        "--attack",
                        "fgsm",
                        "--eps",
                        "0.2",
                        "--n",
                        str(n),
                        "--quiet",
                        "--out",
                        str(out),
                    ]
                )
                == 0
            )
        sizes[n] = _png_size(out / "examples.png")
        assert json.loads((out / "result.json").read_text())["n"] == n  # the numbers still cover all --n
    assert sizes[60] == sizes[8]
    assert str(tmp_path / "a60" / "examples.png") in caplog.text  # the log says where the figure went


def test_physical_examples_show_adversarial_then_transformed(digits_model, tmp_path, monkeypatch):
    # examples.png showed clean vs transformed *clean* images under rows labelled "perturbation" and "adversarial".
    from advlab.cli import physical as phys_cli
    from advlab.data import load_dataset
    from advlab.physical import parse_transform
    from advlab.zoo import load_model

    model = load_model(digits_model)
    data = load_dataset("digits", split="test", n=4)
    calls = []
    real = phys_cli.photo_examples

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(phys_cli, "photo_examples", spy)
    out = tmp_path / "ph"
    assert (
        main(
            [
                "physical",
                "--model",
                str(digits_model),
                "--attacks",
                "fgsm",
                "--eps",
                "0.1,0.3",
                "--n",
                "10",
                "--transform",
                "noise=0.01",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "examples.png").stat().st_size > 1000
    args, _ = calls[0]
    assert args[4] == "fgsm" and args[5] == pytest.approx(0.3)  # first attack, largest eps

    png = real(model, data.x, data.y, parse_transform("noise=0.01", bounds=model.bounds), "fgsm", 0.3, "linf")
    w, h = Image.open(_io.BytesIO(png)).size
    assert h > 200 and w > 4 * 50  # three rows of four panels


def test_universal_writes_an_examples_figure(digits_model, tmp_path):
    out = tmp_path / "u"
    assert (
        main(
            [
                "universal",
                "--model",
                str(digits_model),
                "--eps",
                "0.2",
                "--n-train",
                "20",
                "--n",
                "10",
                "--max-passes",
                "1",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "examples.png").stat().st_size > 1000
    rec = json.loads((out / "result.json").read_text())
    assert isinstance(rec["fooling_rate_test"], float)
    # the figure uses the saved perturbation: recompute its fooling rate independently from the file
    from safetensors.torch import load_file

    from advlab.data import load_dataset
    from advlab.zoo import load_model

    v = load_file(str(out / "perturbation.safetensors"))["perturbation"]
    model = load_model(digits_model)
    test = load_dataset("digits", split="test", n=10)
    with torch.no_grad():
        changed = model(test.x).argmax(1) != model((test.x + v).clamp(0, 1)).argmax(1)
    assert rec["fooling_rate_test"] == pytest.approx(changed.float().mean().item())


def test_blackbox_too_many_images_names_both_options(digits_model, tmp_path, capsys):
    # Was "n: asked for 1150 examples ... use n <= 540 or n=None for all" (a Python argument, not an option).
    rc = main(
        [
            "blackbox",
            "--target",
            str(digits_model),
            "--data",
            "digits",
            "--seed-size",
            "500",
            "--n-eval",
            "100",
            "--out",
            str(tmp_path / "bb"),
        ]
    )
    _one_line_error(capsys, rc, "--seed-size + --n-eval", "500 + 100", "540")


def test_universal_bad_transfer_model_fails_before_the_perturbation_is_computed(digits_model, tmp_path, caplog, capsys):
    # The UAP was computed first (minutes on MNIST) and only then did the missing --transfer folder fail.
    with caplog.at_level("INFO", logger="advlab"):
        rc = main(
            [
                "universal",
                "--model",
                str(digits_model),
                "--eps",
                "0.2",
                "--n-train",
                "20",
                "--n",
                "10",
                "--transfer",
                str(tmp_path / "nope"),
                "--quiet",
                "--out",
                str(tmp_path / "u"),
            ]
        )
    _one_line_error(capsys, rc, "no such model folder")
    assert "UAP pass" not in caplog.text


def test_train_unknown_defense_setting_lists_the_settings(tmp_path, capsys):
    # Was "--set: Trainer.__init__() got an unexpected keyword argument 'foo'; see the defense's settings in the docs".
    rc = main(["train", "--data", "digits", "--defense", "pgd", "--set", "foo=1", "--out", str(tmp_path / "o")])
    last = _one_line_error(capsys, rc, "--set", "'foo'", "'eps'", "'steps'")
    import inspect

    from advlab.defenses import DEFENSES

    cls = DEFENSES.get("pgd")
    for name in ("eps", "steps", "step_size"):  # the listed settings are real keyword arguments of the trainer
        assert any(name in inspect.signature(k.__init__).parameters for k in cls.__mro__ if "__init__" in vars(k))
    assert "epochs" not in last.split("its settings are", 1)[1]  # options of 'advlab train' itself are not repeated


def test_help_shows_meaningful_defaults_only(capsys, monkeypatch):
    # --help said "(default: None)" on required options and "(default: ...) (default: None)" on --data-dir,
    # and printed each description as one unwrapped line of 400+ characters.
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(["universal", "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    assert " ".join(text.split()).count("(default: $ADVLAB_DATA, then the user cache)") == 1
    assert "random seed (data order, random starts) (default: 0)" in " ".join(text.split())  # 0 is still shown
    assert "(default: the dataset named in the model's card)" in " ".join(text.split())
    description = text.split("\n\n")[1]
    assert max(len(line) for line in description.splitlines()) <= 100
    assert "  advlab universal --model runs/m1" in text  # examples keep their own line breaks


def test_blackbox_over_http_does_not_log_every_request(digits_model, tmp_path, monkeypatch, caplog):
    # Every query batch logged 'HTTP Request: POST http://.../predict "HTTP/1.1 200 OK"' (httpx at INFO).
    import base64
    import logging

    import httpx
    import numpy as np

    import advlab.blackbox as bb
    from advlab.zoo import load_model

    model = load_model(digits_model)
    answered = {"batches": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(
                200,
                json={
                    "mode": "labels",
                    "num_classes": 10,
                    "input_shape": [1, 8, 8],
                    "bounds": [0, 1],
                    "queries": 0,
                    "max_queries": None,
                    "max_batch": 1024,
                },
            )
        body = json.loads(request.content)
        x = torch.from_numpy(
            np.frombuffer(base64.b64decode(body["inputs_b64"]), dtype="<f4").reshape(body["shape"]).copy()
        )
        answered["batches"] += 1
        with torch.no_grad():
            return httpx.Response(200, json={"labels": model(x).argmax(1).tolist()})

    class MockedHTTPOracle(bb.HTTPOracle):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, transport=httpx.MockTransport(handler), **kwargs)

    monkeypatch.setattr(bb, "HTTPOracle", MockedHTTPOracle)
    monkeypatch.setitem(bb.PROTOCOLS, "advlab", MockedHTTPOracle)  # the CLI picks the class by --protocol
    level = logging.getLogger("httpx").level
    try:
        with caplog.at_level("INFO"):
            rc = main(
                [
                    "blackbox",
                    "--target",
                    "http://127.0.0.1:8000",
                    "--data",
                    "digits",
                    "--seed-size",
                    "20",
                    "--n-eval",
                    "20",
                    "--rounds",
                    "1",
                    "--epochs",
                    "1",
                    "--out",
                    str(tmp_path / "bb"),
                ]
            )
    finally:
        logging.getLogger("httpx").setLevel(level)
    assert rc == 0 and answered["batches"] >= 2
    assert "HTTP Request" not in caplog.text
    assert "substitute round 1" in caplog.text
    rec = json.loads((tmp_path / "bb" / "result.json").read_text())
    assert rec["target"]["kind"] == "http"


@pytest.mark.parametrize("command,option", [("attack", "--n"), ("universal", "--n-train"), ("train", "--n-train")])
def test_too_many_examples_names_the_option(command, option, digits_model, tmp_path, capsys):
    # Was "n: asked for 5000 examples ... use n <= 540 or n=None for all" (Python, not the command line).
    from advlab.data import load_dataset

    available = len(load_dataset("digits", split="train" if option == "--n-train" else "test"))
    extra = {
        "attack": ["--model", str(digits_model), "--eps", "0.1"],
        "universal": ["--model", str(digits_model), "--eps", "0.1"],
        "train": ["--data", "digits"],
    }[command]
    rc = main([command, *extra, option, "5000", "--out", str(tmp_path / "o")])
    last = _one_line_error(capsys, rc, f"{option}: asked for 5000 examples", f"use {option} <= {available}")
    assert "n=None" not in last
