"""JSMA against a per-example transcription of the paper's algorithm, and its L0 and goal bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab import Classifier, Targeted, ThreatModel
from advlab.attacks import ATTACKS, JSMA, jsma


def _tiny_model(d: int = 12, classes: int = 4, seed: int = 0) -> Classifier:
    """A random float64 MLP: ties in the saliency map are improbable, so two implementations must agree."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return Classifier(net, num_classes=classes, input_shape=(d,)).eval()


def _reference_jsma(model, x, target, theta, gamma, bounds, jacobian="logits", stop=None):
    """Algorithm 3 of the paper for one example, with plain loops over feature pairs and a full Jacobian."""
    low, high = bounds
    x = x.clone()
    d = x.numel()
    domain = {i for i in range(d) if (x[i] < high if theta > 0 else x[i] > low)}
    stop = stop or (lambda pred: pred == target)
    f = (lambda v: model(v[None])[0]) if jacobian == "logits" else (lambda v: model(v[None])[0].softmax(0))
    for _ in range(math.floor(gamma * d) // 2):
        if stop(int(model(x[None]).argmax())) or len(domain) < 2:
            break
        jac = torch.autograd.functional.jacobian(f, x)  # (classes, d)
        alpha, beta = jac[target], jac.sum(0) - jac[target]
        best, best_score = None, -math.inf
        for p in sorted(domain):
            for q in sorted(domain):
                if q <= p:
                    continue
                a, b = float(alpha[p] + alpha[q]), float(beta[p] + beta[q])
                usable = (theta > 0 and a > 0 and b < 0) or (theta < 0 and a < 0 and b > 0)
                if usable and -a * b > best_score:
                    best, best_score = (p, q), -a * b
        if best is None:
            break
        for i in best:
            x[i] = min(max(float(x[i]) + theta * (high - low), low), high)
            if x[i] <= low or x[i] >= high:
                domain.discard(i)
    return x


def test_registered_with_honest_flags():
    assert ATTACKS.get("jsma") is JSMA
    assert JSMA.norms == ("l0",) and JSMA.supports_targeted and not JSMA.minimum_norm and not JSMA.stochastic
    assert "1511.07528" in JSMA.paper


@pytest.mark.parametrize("theta,jacobian", [(1.0, "logits"), (0.5, "logits"), (1.0, "probs"), (-1.0, "logits")])
def test_batched_matches_per_example_reference(theta, jacobian):
    model = _tiny_model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 12, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    target = (y + 1) % 4
    res = jsma(model, x, y, ThreatModel("l0", 12), goal=Targeted(target), theta=theta, gamma=1.0, jacobian=jacobian)
    for i in range(6):
        ref = _reference_jsma(model, x[i], int(target[i]), theta, 1.0, (0.0, 1.0), jacobian)
        torch.testing.assert_close(res.x_adv[i], ref, rtol=0, atol=1e-12)
    assert int((res.x_adv != x).any(1).sum()) >= 4  # the attack did move most examples


def test_untargeted_aims_at_runner_up_and_stops_at_any_wrong_class():
    model = _tiny_model(seed=3)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 12, generator=g, dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    runner_up = z.scatter(1, y[:, None], -math.inf).argmax(1)
    res = jsma(model, x, y, ThreatModel("l0", 12), gamma=1.0)
    assert torch.equal(res.info["target"], runner_up)
    for i in range(6):
        ref = _reference_jsma(
            model, x[i], int(runner_up[i]), 1.0, 1.0, (0.0, 1.0), stop=lambda pred, yi=int(y[i]): pred != yi
        )
        torch.testing.assert_close(res.x_adv[i], ref, rtol=0, atol=1e-12)


def test_targeted_on_digits_changes_few_features(mlp_model, digits_batch):
    """Targeted success means argmax == target; at most floor(gamma * d) features change, each set to the max."""
    x, y = digits_batch
    target = (y + 1) % 10
    res = jsma(mlp_model, x, y, ThreatModel("l0", 64), goal=Targeted(target), gamma=0.25)
    changed = (res.x_adv != x).reshape(x.shape[0], -1)
    assert int(changed.sum(1).max()) <= math.floor(0.25 * 64)
    assert bool((res.x_adv[res.x_adv != x] == 1.0).all())  # theta = 1: changed pixels go to the maximum
    with torch.no_grad():
        pred = mlp_model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == target)
    assert res.success_rate >= 0.75
    torch.testing.assert_close(res.distance, changed.sum(1).float())
    assert torch.equal(changed.sum(1), 2 * res.info["iterations"])  # every iteration changes two new features


def test_l0_eps_caps_the_budget(mlp_model, digits_batch):
    x, y = digits_batch
    target = (y + 1) % 10
    res = jsma(mlp_model, x, y, ThreatModel("l0", 5), goal=Targeted(target), gamma=1.0)
    changed = (res.x_adv != x).reshape(x.shape[0], -1).sum(1)
    assert int(changed.max()) <= 4  # pairs: floor(5 / 2) iterations
    assert bool((res.info["iterations"] <= 2).all())


def test_decreasing_variant_in_non_unit_box(mlp_model, digits_batch):
    x, y = digits_batch
    model = Classifier(
        mlp_model.module, mean=[-1.0], std=[3.0], bounds=(-1.0, 2.0), num_classes=10, input_shape=(1, 8, 8)
    ).eval()
    x_wide = 3 * x - 1
    res = jsma(model, x_wide, y, ThreatModel("l0", 20, (-1.0, 2.0)), theta=-1.0, gamma=0.3)
    moved = res.x_adv != x_wide
    assert bool(moved.any())
    assert bool((res.x_adv[moved] == -1.0).all())  # decreased to the lower edge of the (-1, 2) box
    assert float(res.x_adv.max()) <= 2.0 and float(res.x_adv.min()) >= -1.0
    assert res.success_rate >= 0.25  # removing ink is the weaker direction on digits


def test_bad_settings_raise(mlp_model, digits_batch):
    x, y = digits_batch
    threat = ThreatModel("l0", 10)
    with pytest.raises(ValueError, match="theta"):
        jsma(mlp_model, x, y, threat, theta=0.0)
    with pytest.raises(ValueError, match="theta"):
        jsma(mlp_model, x, y, threat, theta=2.0)
    with pytest.raises(ValueError, match="gamma"):
        jsma(mlp_model, x, y, threat, gamma=0.0)
    with pytest.raises(ValueError, match="jacobian"):
        jsma(mlp_model, x, y, threat, jacobian="softmax")
    with pytest.raises(ValueError, match="does not support norm 'l2'"):
        jsma(mlp_model, x, y, ThreatModel("l2", 1.0))
