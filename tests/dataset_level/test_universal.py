"""Universal adversarial perturbations (Moosavi-Dezfooli et al. 2017): closed forms on linear models, the ball, baselines."""

from __future__ import annotations

import pytest
import torch

from advlab.attacks.deepfool import deepfool
from advlab.dataset_level.universal import fooling_rate, universal_perturbation
from advlab.threat import ThreatModel


def _gauss(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _all_on_class_zero(make_linear_binary):
    clf, w, _ = make_linear_binary(d=20, seed=0)
    bias = -4.0 * float(w.norm())  # every point sits on the class-0 side: margins w.x + b < 0
    with torch.no_grad():
        clf.module.lin.bias.fill_(bias)
    return clf, w, bias


def test_linear_binary_uap_l2_is_the_closed_form(make_linear_binary):
    clf, w, bias = _all_on_class_zero(make_linear_binary)
    x = _gauss(100, 20, 1)
    eps = 3.0
    uap = universal_perturbation(clf, x, ThreatModel("l2", eps, (-100.0, 100.0)), target_fooling_rate=1.0, max_passes=2)
    # every (l2) DeepFool step points along w, so the projected sum is eps * w / |w|
    expected = eps * w / w.norm()
    assert torch.allclose(uap.perturbation, expected, atol=1e-4)
    # and the fooling rate is the fraction of points whose margin is within reach: w.x + b + w.v > 0
    closed = float((x @ w + bias + w @ expected > 0).float().mean())
    assert uap.fooling_rate == pytest.approx(closed, abs=1e-6)
    assert fooling_rate(clf, x, uap.perturbation) == pytest.approx(closed, abs=1e-6)


@pytest.mark.parametrize("eps", [0.4, 1.0])
def test_linear_binary_uap_linf_reaches_the_linf_optimum(make_linear_binary, eps):
    clf, w, bias = _all_on_class_zero(make_linear_binary)
    x = _gauss(100, 20, 1)
    uap = universal_perturbation(
        clf, x, ThreatModel("linf", eps, (-100.0, 100.0)), target_fooling_rate=1.0, max_passes=2
    )
    # the l2 DeepFool steps all point along w; their sum, clipped coordinate-wise again and again while points
    # stay unfooled, ends at eps * sign(w): the maximiser of w.v over the linf ball (the best universal direction)
    expected = eps * w.sign()
    assert torch.allclose(uap.perturbation, expected, atol=1e-5)
    closed = float((x @ w + bias + w @ expected > 0).float().mean())
    assert uap.fooling_rate == pytest.approx(closed, abs=1e-6)


@pytest.mark.parametrize("norm, eps", [("linf", 0.25), ("l2", 1.5)])
def test_uap_stays_in_ball_and_beats_single_example_perturbations(softmax_model, digits, norm, eps):
    threat = ThreatModel(norm, eps)
    x_train, x_test = digits["x_train"][:200], digits["x_test"]
    uap = universal_perturbation(softmax_model, x_train, threat, max_passes=2, generator=0)
    v = uap.perturbation
    assert float(threat.distance(v[None], torch.zeros_like(v[None]))[0]) <= eps * (1 + 1e-5)
    held_out = fooling_rate(softmax_model, x_test, v)
    # single-example perturbations: DeepFool on one point, projected onto the same ball (the best of 10)
    big = ThreatModel(norm, 100.0)
    with torch.no_grad():
        pred = softmax_model(x_train[:10]).argmax(1)
    res = deepfool(softmax_model, x_train[:10], pred, big)
    singles = [
        fooling_rate(softmax_model, x_test, threat.project_delta((torch.as_tensor(res.x_adv)[i] - x_train[i])[None])[0])
        for i in range(10)
    ]
    assert held_out >= max(singles)
    # random noise of the same norm is a much weaker baseline (the paper's comparison)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(v.shape, generator=g)
    noise = eps * (noise.sign() if norm == "linf" else noise / noise.norm())
    assert held_out > fooling_rate(softmax_model, x_test, noise) + 0.1
    assert len(uap.history) == uap.passes and uap.deepfool_calls > 0


def test_uap_is_reproducible_and_fooling_rate_uses_predictions(softmax_model, digits):
    x = digits["x_train"][:60]
    threat = ThreatModel("linf", 0.2)
    a = universal_perturbation(softmax_model, x, threat, max_passes=1, generator=5)
    b = universal_perturbation(softmax_model, x, threat, max_passes=1, generator=5)
    assert torch.equal(a.perturbation, b.perturbation)
    # fooling rate compares predictions with and without v (no labels): by hand
    with torch.no_grad():
        p0 = softmax_model(x).argmax(1)
        p1 = softmax_model((x + a.perturbation).clamp(0, 1)).argmax(1)
    assert fooling_rate(softmax_model, x, a.perturbation) == pytest.approx(float((p0 != p1).float().mean()))


def test_uap_bad_input(softmax_model, digits):
    x = digits["x_train"][:8]
    with pytest.raises(ValueError, match="eps"):
        ThreatModel("linf", -0.1)
    with pytest.raises(ValueError, match="threat.norm"):
        universal_perturbation(softmax_model, x, ThreatModel("l1", 1.0))
    with pytest.raises(ValueError, match="target_fooling_rate"):
        universal_perturbation(softmax_model, x, ThreatModel("linf", 0.1), target_fooling_rate=1.5)
    with pytest.raises(ValueError, match="max_passes"):
        universal_perturbation(softmax_model, x, ThreatModel("linf", 0.1), max_passes=0)
    with pytest.raises(ValueError, match="broadcast"):
        fooling_rate(softmax_model, x, torch.zeros(3, 3))


def test_keep_best_returns_the_best_end_of_pass_perturbation(softmax_model, digits):
    x = digits["x_train"][:80]
    threat = ThreatModel("linf", 0.15)
    best = universal_perturbation(softmax_model, x, threat, target_fooling_rate=1.0, max_passes=3, generator=2)
    last = universal_perturbation(
        softmax_model, x, threat, target_fooling_rate=1.0, max_passes=3, generator=2, keep_best=False
    )
    assert best.history == last.history
    assert best.fooling_rate == pytest.approx(max(best.history))
    assert last.fooling_rate == pytest.approx(last.history[-1])
    assert fooling_rate(softmax_model, x, best.perturbation) == pytest.approx(best.fooling_rate)


def test_old_deepfool_setting_names_still_work_with_a_future_warning(softmax_model, digits):
    # deepfool_max_iter -> deepfool_steps, num_classes -> candidates (DeepFool's own names), one release
    x = digits["x_train"][:30]
    threat = ThreatModel("linf", 0.2)
    new = universal_perturbation(softmax_model, x, threat, max_passes=1, deepfool_steps=3, candidates=4)
    with pytest.warns(FutureWarning, match="is now called") as caught:
        old = universal_perturbation(softmax_model, x, threat, max_passes=1, deepfool_max_iter=3, num_classes=4)
    said = [str(w.message) for w in caught]
    assert any("'deepfool_max_iter' is now called 'deepfool_steps'" in m for m in said)
    assert any("'num_classes' is now called 'candidates'" in m for m in said)
    assert torch.equal(new.perturbation, old.perturbation) and new.deepfool_calls == old.deepfool_calls
    # the settings really reach DeepFool: one step per point changes the result
    one = universal_perturbation(softmax_model, x, threat, max_passes=1, deepfool_steps=1, candidates=4)
    assert not torch.equal(one.perturbation, new.perturbation)
    with pytest.raises(TypeError, match="deepfool_steps"):
        universal_perturbation(softmax_model, x, threat, deepfool_steps=3, deepfool_max_iter=3)
    with pytest.raises(ValueError, match="deepfool_steps"):
        universal_perturbation(softmax_model, x, threat, deepfool_steps=0)
