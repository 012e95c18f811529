"""The physical / universal / patch / fooling sub-commands end to end on a small digits model."""

from __future__ import annotations

import json
import math

import pytest

from advlab.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, digits, train_classifier):
    from advlab.zoo import build_classifier, save_model

    clf = build_classifier("mlp", (1, 8, 8), 10, seed=0, hidden=(32,))
    train_classifier(clf.module, digits["x_train"], digits["y_train"], steps=150, lr=0.02, seed=0)
    clf.eval()
    path = tmp_path_factory.mktemp("phys") / "m"
    save_model(clf, path, dataset="digits", seed=0)
    return path


def test_physical_command_writes_consistent_rates(model_dir, tmp_path):
    out = tmp_path / "p"
    rc = main(
        [
            "physical",
            "--model",
            str(model_dir),
            "--data",
            "digits",
            "--attacks",
            "fgsm,illc",
            "--eps",
            "0.1,0.2",
            "--n",
            "30",
            "--eot",
            "2",
            "--draws",
            "2",
            "--transform",
            "noise=0.05..0.1,blur=0.3..0.6",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rec = json.loads((out / "result.json").read_text())
    assert rec["transform"] == "noise=0.05..0.1,blur=0.3..0.6"
    rows = rec["rows"]
    assert [(r["attack"], r["eps"], r["eot_samples"]) for r in rows] == [
        (a, e, k) for a in ("fgsm", "illc") for e in (0.1, 0.2) for k in (0, 2)
    ]
    for r in rows:
        assert isinstance(r["destruction_rate"], float)
        if r["counted"]:
            assert r["destruction_rate"] == pytest.approx(sum(r["destruction_rate_per_draw"]) / 2)
            assert 0.0 <= r["destruction_rate"] <= 1.0
        assert r["n"] == 30
    assert (out / "table.md").exists()


@pytest.mark.parametrize(
    "spec, words", [("rotate=-90..90", "-45..45"), ("jpeg=0..50", "1..100"), ("blur=-1", "blur sigma")]
)
def test_physical_command_rejects_bad_transforms(model_dir, tmp_path, capsys, spec, words):
    rc = main(
        [
            "physical",
            "--model",
            str(model_dir),
            "--data",
            "digits",
            "--eps",
            "0.1",
            "--transform",
            spec,
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 2
    assert words in capsys.readouterr().err


def test_universal_fooling_and_patch_commands(model_dir, tmp_path):
    out = tmp_path / "u"
    assert (
        main(
            [
                "universal",
                "--model",
                str(model_dir),
                "--data",
                "digits",
                "--eps",
                "0.2",
                "--n-train",
                "60",
                "--n",
                "100",
                "--max-passes",
                "1",
                "--transfer",
                str(model_dir),
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads((out / "result.json").read_text())
    assert rec["perturbation_norm"] <= 0.2 + 1e-6
    # the model transfers to itself with exactly its own fooling rate
    (t,) = rec["transfer"].values()
    assert t["fooling_rate"] == pytest.approx(rec["fooling_rate_test"])
    from safetensors.torch import load_file

    v = load_file(str(out / "perturbation.safetensors"))["perturbation"]
    assert v.shape == (1, 8, 8) and float(v.abs().max()) <= 0.2 + 1e-6

    out = tmp_path / "f"
    assert (
        main(
            [
                "fooling",
                "--model",
                str(model_dir),
                "--steps",
                "200",
                "--step-size",
                "0.02",
                "--noise-n",
                "100",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads((out / "result.json").read_text())
    assert len(rec["fooling_images"]["classes"]) == 10
    assert 0.0 <= rec["rubbish_class"]["fraction"] <= 1.0 and rec["rubbish_class"]["n"] == 100

    out = tmp_path / "patch"
    assert (
        main(
            [
                "patch",
                "--model",
                str(model_dir),
                "--data",
                "digits",
                "--target",
                "8",
                "--patch-size",
                "4",
                "--n-train",
                "300",
                "--n",
                "100",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads((out / "result.json").read_text())
    assert 0.0 <= rec["success_rate_test"] <= 1.0 and not math.isnan(rec["random_patch_success_rate_test"])
    assert (
        main(
            [
                "patch",
                "--model",
                str(model_dir),
                "--data",
                "digits",
                "--target",
                "8",
                "--patch-size",
                "9",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
