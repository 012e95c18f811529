"""Reports say what the user typed and compare like with like; "success rate" is one number everywhere.

- eps given as ``4/255`` reads ``4/255`` in the headline, the HTML report, its figures' labels and the comparison;
- ``advlab report`` (and ``write_comparison``) warn when the evaluations ran on different data;
- the progress bar of ``evaluate`` covers the gradient-masking checks too;
- ``AttackResult.success_rate``, the ``attack_success_rate`` of ``advlab attack``'s result.json and an evaluation
  stage's success rate agree on the same run, and match an independent count (the correctly classified examples
  the attack fooled, over the correctly classified examples).
"""

from __future__ import annotations

import json
import warnings
from typing import ClassVar

import pytest
import torch

from advlab import Targeted, ThreatModel
from advlab.attacks import fgsm
from advlab.evaluation import EvaluationReport, evaluate
from advlab.evaluation import checks as checks_mod
from advlab.reports import comparison, render_comparison, render_report, write_comparison, write_report
from advlab.threat import format_eps


@pytest.fixture(autouse=True)
def _fast_provenance(monkeypatch):
    import advlab.evaluation.engine as engine

    monkeypatch.setattr(engine, "provenance", lambda **extra: {"versions": {}, "git_commit": None, **extra})


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A zoo MLP trained briefly on digits, saved as a model folder; the first 120 test digits (some misclassified)."""
    from advlab.data import load_dataset
    from advlab.zoo import build_classifier, save_model
    from model_matrix import fit

    train = load_dataset("digits", split="train")
    clf = build_classifier("mlp", (1, 8, 8), 10, hidden=(16,))
    fit(clf.module, train.x, train.y, seed=0, steps=25)
    folder = tmp_path_factory.mktemp("digits") / "mlp"
    save_model(clf.eval(), folder, dataset="digits")
    test = load_dataset("digits", split="test", n=120)
    return folder, clf, test.x, test.y


# ---------------------------------------------------------------------- eps as typed
def test_format_eps_shows_pixel_levels_and_typed_decimals():
    assert [format_eps(e) for e in (2 / 255, 4 / 255, 8 / 255, 16 / 255)] == ["2/255", "4/255", "8/255", "16/255"]
    assert [format_eps(e) for e in (0.3, 0.1, 0.2, 0.0157, 0.0)] == ["0.3", "0.1", "0.2", "0.0157", "0"]
    assert format_eps(8 / 255, (-1.0, 1.0)) == "0.0313725"  # pixel levels only mean something on [0, 1]
    assert ThreatModel("linf", 4 / 255).describe() == "L∞ ≤ 4/255"


def test_reports_show_eps_as_fractions_of_255(digits_model):
    _, clf, x, y = digits_model
    report = evaluate(clf, (x[:20], y[:20]), [2 / 255, 4 / 255], attacks=["fgsm"], checks=False)
    assert "eps = 4/255" in report.headline()
    html = render_report(report)
    assert "eps = 4/255" in html and "eps = 2/255" in html and "0.0156863" not in html
    assert "eps = 4/255" in render_comparison([report, EvaluationReport.from_dict(report.to_dict())])
    assert report.to_dict()["eps"] == [2 / 255, 4 / 255]  # JSON numbers stay numbers


# ---------------------------------------------------------------------- comparing different data
def _on_other_data(report: EvaluationReport, name: str) -> EvaluationReport:
    other = EvaluationReport.from_dict(report.to_dict())
    other.settings["data_sha256"] = "0" * 64
    other.settings["data"] = name
    return other


def test_comparing_evaluations_of_different_data_warns(digits_model, tmp_path, caplog):
    _, clf, x, y = digits_model
    report = evaluate(clf, (x[:20], y[:20]), 0.1, attacks=["fgsm"], checks=False)
    report.settings["data"] = "digits (test, first 20)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same data twice: no warning
        assert comparison([report, EvaluationReport.from_dict(report.to_dict())], ["a", "b"])["warnings"] == []
    other = _on_other_data(report, "mnist (test, first 20)")
    with pytest.warns(UserWarning, match=r"the evaluations ran on different data \(a: digits .*; b: mnist"):
        data = comparison([report, other], ["a", "b"])
    assert len(data["warnings"]) == 1
    with pytest.warns(UserWarning, match="different data"):
        json_path, html_path = write_comparison([report, other], tmp_path / "cmp", ["a", "b"])
    assert json.loads(json_path.read_text())["warnings"] == data["warnings"]
    assert "Not like for like" in html_path.read_text()
    # on the command line: one warning line
    from advlab.cli import main

    write_report(report, tmp_path / "r1")
    write_report(other, tmp_path / "r2")
    with caplog.at_level("WARNING", logger="advlab"):
        assert main(["report", str(tmp_path / "r1"), str(tmp_path / "r2"), "--out", str(tmp_path / "cli")]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "advlab"]
    assert any(line.startswith("warning: the evaluations ran on different data") for line in lines), lines


# ---------------------------------------------------------------------- the progress bar
class RecordingBar:
    """A stand-in for tqdm that records its total, its progress and the postfixes it was shown."""

    made: ClassVar[list[RecordingBar]] = []

    def __init__(self, total: int, **kwargs) -> None:
        self.total, self.n, self.postfixes, self.closed = total, 0, [], False
        RecordingBar.made.append(self)

    def update(self, k: int = 1) -> None:
        self.n += k

    def set_postfix(self, **kwargs) -> None:
        self.postfixes.append(kwargs)

    def close(self) -> None:
        self.closed = True


@pytest.mark.filterwarnings("ignore:gradient-masking check failed")
def test_the_progress_bar_covers_the_masking_checks(digits_model, monkeypatch):
    import tqdm.auto

    _, clf, x, y = digits_model
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    RecordingBar.made.clear()
    evaluate(clf, (x[:12], y[:12]), [0.05, 0.1], attacks=["fgsm", "pgd"], checks=True, progress=True)
    (bar,) = RecordingBar.made
    assert bar.total == 2 * 2 + checks_mod.CHECK_UNITS and bar.n == bar.total and bar.closed
    assert [p["check"] for p in bar.postfixes if "check" in p] == ["gradients", "large_eps", "more_steps", "blackbox"]


# ---------------------------------------------------------------------- one success rate
def _independent_rate(model, x_adv, x, y, target=None) -> float:
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        pred = model(torch.as_tensor(x_adv)).argmax(1)
    reached = pred == target if target is not None else pred != y
    return float((reached & correct).sum()) / float(correct.sum())


def test_success_rate_is_the_same_number_in_python_the_cli_and_the_reports(digits_model, tmp_path):
    folder, clf, x, y = digits_model
    threat = ThreatModel("linf", 0.1)
    with torch.no_grad():
        assert int((clf(x).argmax(1) != y).sum()) > 0, "the data must hold misclassified examples"
    python = fgsm(clf, x, y, threat)
    assert python.success_rate == pytest.approx(_independent_rate(clf, python.x_adv, x, y))
    assert python.success_rate != pytest.approx(float(python.success.float().mean()))  # misclassified left out

    from advlab.cli import main

    out = tmp_path / "cli"
    argv = ["attack", "--model", str(folder), "--data", "digits", "--attack", "fgsm", "--eps", "0.1"]
    assert main([*argv, "--n", str(len(y)), "--quiet", "--out", str(out)]) == 0
    cli = json.loads((out / "result.json").read_text())
    assert cli["attack_success_rate"] == pytest.approx(python.success_rate)

    report = evaluate(clf, (x, y), 0.1, attacks=["fgsm"], checks=False)
    (stage,) = report.results[0].stages
    assert stage.success_rate == pytest.approx(python.success_rate)
    assert report.robust_accuracy() == pytest.approx(report.clean_accuracy * (1 - python.success_rate))


def test_targeted_success_rate_counts_the_correctly_classified_examples(digits_model, tmp_path):
    folder, clf, x, y = digits_model
    keep = y != 3
    x, y = x[keep], y[keep]
    result = fgsm(clf, x, y, ThreatModel("linf", 0.3), goal=Targeted(torch.full_like(y, 3)))
    assert result.success_rate == pytest.approx(_independent_rate(clf, result.x_adv, x, y, target=3))

    from advlab.cli import main

    argv = ["attack", "--model", str(folder), "--data", "digits", "--attack", "fgsm", "--eps", "0.3", "--target", "3"]
    assert main([*argv, "--n", "120", "--quiet", "--out", str(tmp_path / "t")]) == 0
    cli = json.loads((tmp_path / "t" / "result.json").read_text())
    assert cli["attack_success_rate"] == pytest.approx(result.success_rate)
