"""``advlab evaluate`` and ``advlab report`` end to end on a tiny saved digits model."""

from __future__ import annotations

import json

import pytest

from advlab.cli import main


def test_evaluate_cli_writes_report_and_resumes(tmp_path, saved_model, capsys):
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--model",
        str(saved_model),
        "--data",
        "digits",
        "--eps",
        "0.05,0.1",
        "--n",
        "20",
        "--attacks",
        "fgsm,rfgsm",
        "--no-checks",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    html = (out / "report.html").read_text()
    assert [r["eps"] for r in report["results"]] == [0.05, 0.1]
    assert [a["label"] for a in report["attacks"]] == ["fgsm", "rfgsm"]
    assert report["settings"]["data"].startswith("digits")
    assert report["model_card"]["dataset"] == "digits"
    acc = report["results"][-1]["robust_accuracy"]
    assert f"{100 * acc:.1f}%" in html and "http://" not in html and "https://" not in html
    assert (out / "checkpoint" / "state.safetensors").exists()
    # run again: resumes from the checkpoint and gives the same numbers
    assert main(args) == 0
    again = json.loads((out / "report.json").read_text())
    assert [r["robust_accuracy"] for r in again["results"]] == [r["robust_accuracy"] for r in report["results"]]
    # a changed configuration is refused without --overwrite
    changed = [a if a != "0.05,0.1" else "0.05,0.2" for a in args]
    assert main(changed) == 2
    assert "another configuration (differs in: eps)" in capsys.readouterr().err
    assert main(changed + ["--overwrite"]) == 0
    # advlab report: side by side
    cmp_dir = tmp_path / "cmp"
    assert main(["report", str(out), str(out), "--labels", "a,b", "--out", str(cmp_dir)]) == 0
    cmp = json.loads((cmp_dir / "comparison.json").read_text())
    assert [m["label"] for m in cmp["models"]] == ["a", "b"]
    assert "data:image/png;base64," in (cmp_dir / "comparison.html").read_text()


def test_evaluate_cli_clear_errors(tmp_path, saved_model, capsys):
    base = ["evaluate", "--model", str(saved_model), "--data", "digits", "--n", "5", "--out", str(tmp_path / "o")]
    assert main(base + ["--eps", "0.1", "--attacks", "pgd,nope"]) == 2
    assert "unknown attack 'nope'" in capsys.readouterr().err
    assert main(base + ["--eps", "0.3,0.1", "--preset", "fast"]) == 2
    assert "strictly increasing" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "no report.json" in capsys.readouterr().err


def test_evaluate_cli_shows_a_failed_check_once_and_sums_up(tmp_path, saved_model, caplog, monkeypatch):
    """A failed masking check reaches the user as one ``warning:`` line with its meaning, and the run ends with a
    count of failed checks under the headline."""
    import advlab.evaluation.checks as checks_mod
    from advlab.evaluation.report import CheckResult

    def failing(ctx):
        return CheckResult(
            "large_eps",
            "Accuracy goes to zero at a large eps",
            "fail",
            0.4,
            0.1,
            "PGD-20 at eps = 0.5 leaves 40.0% accuracy",
            "the attack is not working",
        )

    monkeypatch.setattr(checks_mod, "check_large_eps", failing)
    args = [
        "evaluate",
        "--model",
        str(saved_model),
        "--data",
        "digits",
        "--eps",
        "0.1",
        "--n",
        "20",
        "--attacks",
        "fgsm",
        "--quiet",
        "--out",
        str(tmp_path / "eval"),
    ]
    with caplog.at_level("INFO", logger="advlab"):
        assert main(args) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "advlab"]
    shown = [ln for ln in lines if "Accuracy goes to zero" in ln]
    assert shown == [
        "warning: gradient-masking check failed: Accuracy goes to zero at a large eps: PGD-20 at eps = 0.5 "
        "leaves 40.0% accuracy. the attack is not working"
    ]
    assert lines.index(shown[0]) < next(i for i, ln in enumerate(lines) if ln.startswith("robust accuracy"))
    assert any(ln.startswith("1 gradient-masking check failed") for ln in lines)


@pytest.mark.parametrize(
    "option, shown", [("--n", "--n/--num-examples"), ("--num-examples", "--n/--num-examples"), ("--eot-samples", None)]
)
def test_evaluate_cli_non_positive_sizes_are_refused_with_the_option_name(option, shown, saved_model, tmp_path, capsys):
    argv = ["evaluate", "--model", str(saved_model), "--eps", "0.1", option, "0", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"argument {shown or option}: expected a whole number >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_evaluate_cli_data_errors_name_the_option(saved_model, tmp_path, capsys):
    from advlab.zoo import build_classifier, save_model

    out = tmp_path / "o"
    base = ["evaluate", "--eps", "0.1", "--preset", "fast", "--out", str(out)]
    assert main([*base, "--model", str(saved_model), "--n", "100000"]) == 2  # digits' test split has 360
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("advlab evaluate: error: --n: asked for 100000 examples")
    mnist_shaped = tmp_path / "mnist-shaped"
    save_model(build_classifier("mlp", input_shape=(1, 28, 28), num_classes=10), mnist_shaped, dataset="mnist")
    assert main([*base, "--model", str(mnist_shaped), "--data", "digits", "--n", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--data: digits images have shape (1, 8, 8) but the model expects (1, 28, 28)" in err
    assert not out.exists()


def test_evaluate_cli_sums_up_the_passes_it_spent(tmp_path, saved_model, caplog):
    """The last lines say what the evaluation cost, as report.json records it."""
    args = ["evaluate", "--model", str(saved_model), "--data", "digits", "--eps", "0.1", "--n", "20", "--attacks",
            "fgsm", "--no-checks", "--quiet", "--out", str(tmp_path / "eval")]  # fmt: skip
    with caplog.at_level("INFO", logger="advlab"):
        assert main(args) == 0
    total = json.loads((tmp_path / "eval" / "report.json").read_text())["passes"]["total"]
    lines = [r.getMessage() for r in caplog.records if r.name == "advlab"]
    cost = [ln for ln in lines if ln.startswith("cost: ")]
    assert len(cost) == 1 and f"{total['forward']:,} forward and {total['backward']:,} backward passes" in cost[0]
