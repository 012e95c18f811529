"""HTML/JSON reports: self-contained pages that show the headline numbers; JSON numbers are numbers."""

from __future__ import annotations

import base64
import json
import re

import pytest

from advlab.evaluation import CheckResult, EvaluationReport
from advlab.reports import comparison, load_report, render_comparison, render_report, write_comparison, write_report

NUMBER_AS_TEXT = re.compile(r"^\s*-?\d+(\.\d+)?(e-?\d+)?%?\s*$")


def _assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert "<link" not in html.lower()
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert imgs, "the page has figures"
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def _walk(obj, path="$"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def test_html_self_contained_with_headline(toy_report):
    html = render_report(toy_report)
    _assert_self_contained(html)
    last = toy_report.results[-1]
    assert f"{100 * last.robust_accuracy:.1f}%" in html
    assert f"[{100 * last.ci.low:.1f}%, {100 * last.ci.high:.1f}%]" in html
    assert "Robust accuracy at L∞ eps = 0.3 is" in html
    for r in toy_report.results:
        assert f"{r.n_robust} / {r.n}" in html
    assert "shift-a" in html and "shift-b" in html
    assert "Wilson" in html


def test_failed_check_shown_red(toy_report):
    import dataclasses

    failing = dataclasses.replace(
        toy_report,
        checks=[
            CheckResult(
                name="gradients",
                title="Useful input gradients",
                status="fail",
                value=1.0,
                threshold=0.01,
                detail="100% zero",
                meaning="masking",
            )
        ],
    )
    html = render_report(failing)
    assert 'class="pill fail"' in html and "1 masking check failed" in html and "Treat these numbers with care" in html


def test_json_numbers_are_numbers_and_round_trip(tmp_path, toy_report):
    json_path, html_path = write_report(toy_report, tmp_path)
    d = json.loads(json_path.read_text())
    for path, v in _walk(d):
        if isinstance(v, str):
            assert not NUMBER_AS_TEXT.match(v), f"{path} holds a number as text: {v!r}"
    assert isinstance(d["results"][0]["robust_accuracy"], float)
    assert isinstance(d["results"][0]["ci"]["low"], float) and d["results"][0]["ci"]["method"] == "wilson"
    assert isinstance(d["eps"][0], float) and isinstance(d["n"], int)
    assert isinstance(d["results"][0]["stages"][0]["wall_time_s"], float)
    again = load_report(tmp_path)
    assert again.to_dict() == toy_report.to_dict()
    assert again.x is not None and again.x_adv.shape == toy_report.x_adv.shape  # examples saved beside
    assert html_path.read_text().startswith("<!DOCTYPE html>")


def test_html_and_json_show_the_passes_beside_the_time(toy_report):
    """Each stage's passes (with their per-example averages), the Cost table's parts and total, the comparison's."""
    p = toy_report.passes
    assert p is not None and p.total.forward > 0
    html = render_report(toy_report)
    assert 'id="cost"' in html and "forward passes" in html
    for s in (s for r in toy_report.results for s in r.stages):
        assert f"{s.forward_passes:,} <small>({s.forward_per_example:.1f}/ex.)</small>" in html
    for part in (p.clean, p.attacks, p.total):
        assert f"{part.forward:,}</" in html or f"{part.forward:,}</b>" in html
    assert f"{p.total.forward:,} forward and {p.total.backward:,} backward passes" in html
    assert comparison([toy_report])["models"][0]["passes"] == p.total.to_dict()


def test_comparison_page(tmp_path, toy_report):
    other = EvaluationReport.from_dict(toy_report.to_dict())
    other.model = "other"
    data = comparison([toy_report, other], ["first", "second"])
    assert [m["label"] for m in data["models"]] == ["first", "second"]
    assert data["models"][0]["robust"]["0.3"]["accuracy"] == pytest.approx(toy_report.robust_accuracy(0.3))
    html = render_comparison([toy_report, other], ["first", "second"])
    _assert_self_contained(html)
    assert "first" in html and "second" in html
    assert f"{100 * toy_report.robust_accuracy(0.3):.1f}%" in html
    json_path, _ = write_comparison([toy_report, other], tmp_path)
    assert json.loads(json_path.read_text())["norm"] == "linf"


def test_comparison_refuses_mixed_norms(toy_report):
    other = EvaluationReport.from_dict(toy_report.to_dict())
    other.norm = "l2"
    with pytest.raises(ValueError, match="different norms"):
        comparison([toy_report, other])
    with pytest.raises(ValueError, match="labels"):
        comparison([toy_report], ["a", "b"])


def test_load_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="advlab evaluate"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text('{"x": 1}')
    with pytest.raises(ValueError, match="not an advlab evaluation report"):
        load_report(tmp_path)


def test_comparison_default_labels_tell_same_architecture_apart(toy_report):
    """Without --labels, two evaluations of one architecture are labelled by their model folders, then presets."""

    def copy(model_path, preset):
        r = EvaluationReport.from_dict(toy_report.to_dict())
        r.settings = {**r.settings, "model_path": model_path, "preset": preset}
        return r

    std, pgd = copy("/runs/mnist-std", "standard"), copy("/runs/mnist-pgd", "standard")
    pgd_fast = copy("/runs/mnist-pgd", "fast")
    name = toy_report.model
    assert [m["label"] for m in comparison([std, pgd])["models"]] == [f"{name} (mnist-std)", f"{name} (mnist-pgd)"]
    assert [m["label"] for m in comparison([pgd_fast, pgd, std])["models"]] == [
        f"{name} (mnist-pgd, fast)",
        f"{name} (mnist-pgd, standard)",
        f"{name} (mnist-std)",
    ]
    assert [m["label"] for m in comparison([pgd, pgd])["models"]] == [f"{name} (mnist-pgd)", f"{name} (mnist-pgd) (2)"]
    other = EvaluationReport.from_dict(toy_report.to_dict())
    other.model = "other"
    assert [m["label"] for m in comparison([toy_report, other])["models"]] == [name, "other"]


def test_report_title_names_the_model_folder(toy_report):
    from advlab.reports.html import render_report

    assert f"<title>Robustness of {toy_report.model}</title>" in render_report(toy_report)
    r = EvaluationReport.from_dict(toy_report.to_dict())
    r.settings = {**r.settings, "model_path": "/runs/mnist-pgd"}
    assert f"<title>Robustness of {toy_report.model} (mnist-pgd)</title>" in render_report(r)
    assert "<title>Mine</title>" in render_report(r, title="Mine")
