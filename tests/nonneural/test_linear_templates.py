"""Karpathy's linear fooling: weights read off exactly, closed-form flip radius, templates for plotting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from advlab import Classifier
from advlab.nonneural import affine_weights, fool_linear, from_sklearn, plot_linear_fooling


@pytest.fixture(scope="module")
def lr(digits_flat):
    return LogisticRegression(max_iter=300).fit(
        digits_flat["x_train"][:500].numpy(), digits_flat["y_train"][:500].numpy()
    )


def _torch_nets():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 10)
    hidden = torch.nn.Linear(64, 10)
    with torch.no_grad():
        for layer in (lin, hidden):
            layer.weight.copy_(torch.randn(10, 64, generator=g))
            layer.bias.copy_(torch.randn(10, generator=g))
    affine = Classifier(torch.nn.Sequential(torch.nn.Flatten(), lin), num_classes=10, input_shape=(1, 8, 8))
    nonlinear = Classifier(
        torch.nn.Sequential(torch.nn.Flatten(), hidden, torch.nn.Tanh()), num_classes=10, input_shape=(1, 8, 8)
    )
    return affine.eval(), nonlinear.eval()


def test_affine_weights_recover_coef(lr):
    clf = from_sklearn(lr, input_shape=(1, 8, 8))
    w, b = affine_weights(clf, (1, 8, 8))
    np.testing.assert_allclose(w.numpy(), lr.coef_, atol=1e-5)
    np.testing.assert_allclose(b.numpy(), lr.intercept_, atol=1e-5)
    # a torch softmax-regression works too (W from the Linear layer)
    affine, _ = _torch_nets()
    w2, b2 = affine_weights(affine, (1, 8, 8))
    np.testing.assert_allclose(w2.numpy(), affine.module[1].weight.detach().double().numpy(), atol=1e-5)
    np.testing.assert_allclose(b2.numpy(), affine.module[1].bias.detach().double().numpy(), atol=1e-5)


def test_margin_step_flips_exactly_at_the_closed_form_radius(lr, digits):
    wide = from_sklearn(lr, input_shape=(1, 8, 8), bounds=(-100.0, 100.0))  # keep the box inactive
    x, y = digits["x_test"][:10], digits["y_test"][:10]
    target = (y + 3) % 10
    probe = fool_linear(wide, x, y, target, eps=0.0)
    flip = probe.flip_eps.double()
    for factor, want in ((1.001, True), (0.999, False)):
        for i in range(10):
            if flip[i] <= 0:
                continue
            out = fool_linear(wide, x[i : i + 1], y[i : i + 1], target[i : i + 1], eps=float(flip[i] * factor))
            with torch.no_grad():
                s = wide.module.decision_function(out.x_adv)[0]
            assert bool(s[target[i]] >= s[y[i]]) is want


def test_outputs_and_plot(lr, digits, tmp_path):
    clf = from_sklearn(lr, input_shape=(1, 8, 8))
    x, y = digits["x_test"][:8], digits["y_test"][:8]
    for direction in ("margin", "template", "l2"):
        eps = 3.0 if direction == "l2" else 0.3
        out = fool_linear(clf, x, y, target=4, eps=eps, direction=direction)
        assert out.templates.shape == (10, 1, 8, 8)
        assert float(out.templates.min()) == 0.0 and float(out.templates.max()) == 1.0
        assert out.x_adv.shape == x.shape and float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1
        with torch.no_grad():
            assert torch.equal(out.pred, clf(out.x_adv).argmax(1))
        if direction != "l2":
            assert float((out.x_adv - x).abs().max()) <= eps + 1e-6
    out = fool_linear(clf, x, y, target=4, eps=0.3)
    assert out.success.float().mean() >= 0.5  # eps 0.3 pushes most digits to "4"
    path = plot_linear_fooling(out, x, tmp_path / "fool.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors(lr, digits):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    _, nonlinear = _torch_nets()
    with pytest.raises(ValueError, match="linear"):
        fool_linear(nonlinear, x, y, target=1, eps=0.1)
    clf = from_sklearn(lr, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="direction"):
        fool_linear(clf, x, y, target=1, eps=0.1, direction="sign")
    with pytest.raises(ValueError, match="eps"):
        fool_linear(clf, x, y, target=1, eps=-1.0)
    with pytest.raises(ValueError, match="target"):
        fool_linear(clf, x, y, target=12, eps=0.1)
