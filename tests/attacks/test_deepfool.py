"""DeepFool against closed forms on linear models and a per-example reference implementation."""

from __future__ import annotations

import pytest
import torch

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import ATTACKS, DeepFool, deepfool

WIDE = (-100.0, 100.0)


def _linear_points(make_linear_binary, n: int = 6, d: int = 20):
    model, w, b = make_linear_binary(d=d, seed=5, bias=0.3)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, d, generator=g) * 2.0
    margin = x @ w + b
    y = (margin > 0).long()
    return model, w, b, x, y, margin


def test_registered_with_honest_flags():
    cls = ATTACKS.get("deepfool")
    assert cls is DeepFool
    assert cls.norms == ("l2", "linf") and not cls.supports_targeted and cls.minimum_norm and not cls.stochastic
    assert "1511.04599" in cls.paper


def test_l2_linear_binary_one_step_closed_form(make_linear_binary):
    """Minimal l2 perturbation of sign(w.x + b) is -margin * w / |w|^2; DeepFool takes it in one step."""
    model, w, _b, x, y, margin = _linear_points(make_linear_binary)
    res = deepfool(model, x, y, ThreatModel("l2", 1e3, WIDE), overshoot=0.02)
    step = margin.abs() / w.norm() + 1e-4 * (WIDE[1] - WIDE[0])  # + the reference code's 1e-4 (box units)
    expected = x - 1.02 * (step * margin.sign() / w.norm())[:, None] * w[None]
    assert bool(res.success.all())
    torch.testing.assert_close(res.x_adv, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.distance, 1.02 * step, rtol=1e-5, atol=1e-6)
    assert res.info["iterations"].tolist() == [1] * x.shape[0]


def test_linf_linear_binary_one_step_closed_form(make_linear_binary):
    """Minimal linf perturbation is |margin| / |w|_1 along -sign(margin) * sign(w)."""
    model, w, _b, x, y, margin = _linear_points(make_linear_binary)
    res = deepfool(model, x, y, ThreatModel("linf", 1e3, WIDE), overshoot=0.02)
    minimal = margin.abs() / w.abs().sum() + 1e-4 * (WIDE[1] - WIDE[0])
    expected = x - 1.02 * (minimal * margin.sign())[:, None] * w.sign()[None]
    assert bool(res.success.all())
    torch.testing.assert_close(res.x_adv, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.distance, 1.02 * minimal, rtol=1e-5, atol=1e-6)


def test_multiclass_linear_nearest_boundary(softmax_model, digits_batch):
    """On an affine multi-class model the first step reaches the nearest of all class boundaries exactly."""
    x, y = digits_batch
    lin = softmax_model.module[1]
    W = lin.weight.detach()
    with torch.no_grad():
        z = softmax_model(x)
    keep = z.argmax(1) == y
    x, y, z = x[keep], y[keep], z[keep]
    wy = W[y]  # (n, d)
    dz = z - z.gather(1, y[:, None])  # (n, 10), zero at y
    dw = W[None] - wy[:, None]  # (n, 10, d)
    dist = dz.abs() / dw.norm(dim=2)
    dist[torch.arange(len(y)), y] = float("inf")
    minimal = dist.min(1).values  # independent closed form: distance to the nearest affine boundary
    res = deepfool(softmax_model, x, y, ThreatModel("l2", 1e3, WIDE), candidates=10, overshoot=0.02)
    assert bool(res.success.all())
    torch.testing.assert_close(res.distance, 1.02 * (minimal + 1e-4 * (WIDE[1] - WIDE[0])), rtol=1e-4, atol=1e-5)
    assert bool((res.info["iterations"] == 1).all())


def _reference_deepfool(model, x, label, norm, num_classes=10, overshoot=0.02, max_iter=50, bounds=(0.0, 1.0)):
    """Per-example transcription of the paper's Algorithm 2 with a full Jacobian (independent of the batching)."""
    with torch.no_grad():
        z0 = model(x[None])[0]
    order = torch.cat(
        [
            torch.tensor([label]),
            torch.argsort(z0.masked_fill(torch.arange(z0.numel()) == label, -float("inf")), descending=True)[
                : num_classes - 1
            ],
        ]
    )
    r_tot = torch.zeros_like(x)
    x_i = x.clone()
    for _ in range(max_iter):
        z = model(x_i[None])[0]
        if int(z.argmax()) != label:
            break
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x_i).reshape(z.numel(), -1)
        best, best_r = float("inf"), None
        for k in order[1:]:
            w_k = jac[k] - jac[label]
            f_k = float((z[k] - z[label]).detach())
            dual = w_k.norm() if norm == "l2" else w_k.abs().sum()
            dist = abs(f_k) / float(dual)
            if dist < best:
                step = dist + 1e-4 * (bounds[1] - bounds[0])  # the authors' code: (pert + 1e-4) * w / |w|
                best, best_r = dist, (step * w_k / w_k.norm() if norm == "l2" else step * w_k.sign())
        r_tot = r_tot + best_r.reshape(x.shape)
        x_i = (x + (1 + overshoot) * r_tot).clamp(*bounds).detach()
    return x_i


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_batched_matches_per_example_reference(norm, mlp_model, digits_batch):
    x, y = digits_batch
    x, y = x[:6], y[:6]
    res = deepfool(mlp_model, x, y, ThreatModel(norm, 1e3, (0.0, 1.0)), candidates=4)
    for i in range(x.shape[0]):
        ref = _reference_deepfool(mlp_model, x[i], int(y[i]), norm, num_classes=4)
        torch.testing.assert_close(res.x_adv[i], ref, rtol=1e-4, atol=1e-5)


def test_fools_mlp_with_small_perturbations(mlp_model, digits_batch):
    x, y = digits_batch
    res = deepfool(mlp_model, x, y, ThreatModel("l2", 100.0))
    assert res.success_rate == 1.0
    assert float(res.distance.max()) < 8.0  # the box diagonal of 8x8 images is 8: far from a trivial attack
    res_inf = deepfool(mlp_model, x, y, ThreatModel("linf", 1.0))
    assert res_inf.success_rate == 1.0
    assert float(res_inf.distance.max()) < 1.0


def test_results_inside_non_unit_box(make_linear_binary):
    """With a box that binds (bounds (-0.5, 0.5)), iterates stay inside and every feasible point is flipped."""
    model, w, b, x, y, _margin = _linear_points(make_linear_binary)
    x = x.clamp(-0.45, 0.45)
    y = ((x @ w + b) > 0).long()
    # The corner of the box that moves the margin furthest toward the other class decides feasibility.
    toward = torch.where(y == 1, -1.0, 1.0)
    corner = torch.where(toward[:, None] * w[None] > 0, 0.5, -0.5)
    feasible = ((corner @ w + b) > 0).long() != y
    assert bool(feasible.any())
    model = Classifier(model.module, num_classes=2, input_shape=(20,), bounds=(-0.5, 0.5)).eval()
    for norm in ("l2", "linf"):
        res = deepfool(model, x, y, ThreatModel(norm, 1e3, (-0.5, 0.5)))
        assert float(res.x_adv.min()) >= -0.5 and float(res.x_adv.max()) <= 0.5
        assert bool((res.x_adv.abs() == 0.5).any())  # the box was active
        assert torch.equal(res.success, feasible.bool())


def test_refuses_targeted_goal(mlp_model, digits_batch):
    x, y = digits_batch
    with pytest.raises(ValueError, match="untargeted only"):
        deepfool(mlp_model, x, y, ThreatModel("l2", 1.0), goal=Targeted((y + 1) % 10))


def test_bad_settings_raise(mlp_model, digits_batch):
    x, y = digits_batch
    with pytest.raises(ValueError, match="candidates"):
        deepfool(mlp_model, x, y, ThreatModel("l2", 1.0), candidates=1)
    with pytest.raises(ValueError, match="overshoot"):
        deepfool(mlp_model, x, y, ThreatModel("l2", 1.0), overshoot=-0.1)
    with pytest.raises(TypeError, match="steps"):
        deepfool(mlp_model, x, y, ThreatModel("l2", 1.0), steps=2.5)
    with pytest.raises(ValueError, match="does not support norm 'l1'"):
        deepfool(mlp_model, x, y, ThreatModel("l1", 1.0))
