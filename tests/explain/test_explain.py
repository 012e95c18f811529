"""Explain analyses against closed forms on linear models, and the report/CLI on digits."""

from __future__ import annotations

import json
import re

import pytest
import torch

import advlab
from advlab.explain import (
    compare_perturbations,
    cross_section,
    explain,
    gradient_amplitudes,
    logit_response,
    visualize_classes,
)


class Binary(torch.nn.Module):
    """logits = [0, w.x + b]."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w), torch.nn.Parameter(torch.tensor(b))

    def forward(self, x):
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


@pytest.fixture
def tiny_mlp_digits(mlp_model, digits):
    return mlp_model, digits["x_test"], digits["y_test"]


@pytest.fixture
def binary():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, generator=g)
    return advlab.Classifier(Binary(w, -0.5), num_classes=2, input_shape=(16,)).eval(), w


def test_cross_section_flip_distance_matches_closed_form(binary):
    model, w = binary
    x = torch.full((1, 16), 0.5)
    z = float(x[0] @ w - 0.5)
    y = int(z > 0)
    cs = cross_section(model, x, y, kind="adversarial", span=8.0, resolution=401)
    # The FGSM direction is sign(w) (or its opposite), unit-normalised: z moves by ||w||_1 / sqrt(d) per unit.
    exact = abs(z) * 16**0.5 / float(w.abs().sum())
    step = 16.0 / 400
    assert exact <= cs.flip_distance <= exact + step + 1e-6
    assert cs.classes.shape == (401, 401)


def test_random_plane_has_no_flip_when_far(binary):
    model, w = binary
    x = torch.full((1, 16), 0.5)
    cs = cross_section(model, x, int(float(x[0] @ w - 0.5) > 0), kind="random", span=1e-3, resolution=5)
    assert cs.flip_distance == float("inf") and cs.to_dict()["flip_distance"] is None


def test_linear_model_response_is_exactly_linear(binary):
    model, _ = binary
    x = torch.rand(4, 16)
    resp = logit_response(model, x, torch.zeros(4, dtype=torch.long), eps_max=0.7, num=11)
    assert resp.r2 == pytest.approx(1.0, abs=1e-9)
    assert resp.logits.shape == (11, 2)


def test_gradient_amplitudes_closed_form(binary):
    model, w = binary
    x = torch.rand(5, 16)
    y = torch.tensor([0, 1, 0, 1, 1])
    amps = gradient_amplitudes(model, x, y)
    z = x @ w.detach() - 0.5
    p1 = torch.sigmoid(z)
    # d CE / dz = p1 - y; d z / dx = w.
    expected = ((p1 - y.float())[:, None] * w.detach()[None]).norm(dim=1)
    torch.testing.assert_close(amps.l2, expected, rtol=1e-5, atol=1e-7)
    assert amps.zero_fraction == 0.0


def test_perturbation_comparison_norms_and_order(tiny_mlp_digits):
    model, x, y = tiny_mlp_digits
    cmp = compare_perturbations(model, x[:120], y[:120], eps=0.2, steps=10)
    rows = {r["name"].split(" ")[0]: r for r in cmp.rows}
    clean = float((model.predict(x[:120]) == y[:120]).float().mean())
    assert rows["clean"]["accuracy"] == pytest.approx(clean)
    assert rows["PGD-10"]["linf"] <= 0.2 + 1e-6 and rows["random"]["linf"] <= 0.2 + 1e-6
    assert rows["Gaussian"]["l2"] <= rows["PGD-10"]["l2"] + 1e-5  # clipping only shrinks the matched noise
    # Adversarial directions are far more harmful than random ones of the same size.
    assert rows["PGD-10"]["accuracy"] < rows["random"]["accuracy"] - 0.2


def test_class_visualisation_reaches_classes_inside_ball(tiny_mlp_digits):
    model, x, _ = tiny_mlp_digits
    start = x.mean(0, keepdim=True)
    viz = visualize_classes(model, start, 10, radius=3.0, steps=60)
    assert viz.x.shape == (10, 1, 8, 8)
    assert float(viz.x.min()) >= 0 and float(viz.x.max()) <= 1
    assert float((viz.x - start).flatten(1).norm(dim=1).max()) <= 3.0 + 1e-4
    assert int((viz.confidence > 0.9).sum()) >= 8


def test_explain_report_and_html(tiny_mlp_digits, tmp_path):
    model, x, y = tiny_mlp_digits
    report = explain(model, (x[:60], y[:60]), n=60, eps=0.2)
    path = report.write(tmp_path)
    html = path.read_text()
    assert not re.search(r'(src|href)="https?://', html)
    assert "data:image/png;base64," in html
    data = json.loads((tmp_path / "explain.json").read_text())
    assert set(data["models"]["model"]) >= {
        "clean_accuracy",
        "cross_sections",
        "linearity",
        "perturbations",
        "gradients",
        "visualization",
    }
    assert (tmp_path / "visualization.png").exists()


def test_explain_skips_image_figures_for_flat_input(binary, tmp_path):
    model, _ = binary
    x = torch.rand(20, 16)
    y = (x @ model.module.w.detach() - 0.5 > 0).long()
    report = explain(model, (x, y), n=20, eps=0.1)
    assert any("not an image" in note for note in report.notes)
    assert "visualization" not in report.figures and "cross_sections" in report.figures
    report.write(tmp_path)


def test_explain_cli(tmp_path):
    from advlab.cli import main
    from advlab.zoo import build_classifier, save_model

    # An untrained model is enough to check the command's plumbing; the analyses are tested above.
    clf = build_classifier("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(32,))
    save_model(clf, tmp_path / "m", dataset="digits")
    assert main(["explain", "--model", str(tmp_path / "m"), "--n", "30", "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "explain.html").exists()
    assert main(["explain", "--model", str(tmp_path / "m"), "--n", "0", "--out", str(tmp_path / "e")]) == 2
