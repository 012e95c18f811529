"""FGSM adversarial training (Goodfellow et al.): alpha = 1 is standard training, the mixed loss by hand,
the eps ramp-up, bad settings, unknown defense names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _defense_helpers import digits, mlp, same_weights

from advlab.defenses import DEFENSES, GoodfellowTraining, StandardTraining
from advlab.threat import ThreatModel

SETTINGS = dict(epochs=2, lr=1e-2, batch_size=64, progress=False, seed=3)


def test_alpha_one_equals_standard_training_exactly():
    x, y = digits()
    data = (x[:600], y[:600])
    std = StandardTraining(**SETTINGS).fit(mlp(), data)
    gf = GoodfellowTraining(alpha=1.0, eps=0.25, **SETTINGS).fit(mlp(), data)
    same_weights(std.model_, gf.model_)
    assert [h["train_loss"] for h in std.history_] == [h["train_loss"] for h in gf.history_]


def test_mixed_loss_matches_formula_by_hand():
    x, y = digits()
    xb, yb = x[:32], y[:32]
    model = mlp(seed=1)
    trainer = GoodfellowTraining(alpha=0.5, eps=0.1, **SETTINGS)
    loss, logits = trainer.training_step(model, xb, yb, 0.0)
    # oracle: FGSM written out with autograd, then the paper's J~ = a J(x) + (1 - a) J(x_adv)
    xr = xb.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), yb, reduction="sum"), xr)
    x_adv = (xb + 0.1 * g.sign()).clamp(0, 1)
    expected = 0.5 * F.cross_entropy(model(xb), yb) + 0.5 * F.cross_entropy(model(x_adv), yb)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, model(xb))
    assert loss.requires_grad


def test_training_improves_fgsm_accuracy_over_standard():
    x, y = digits()
    data = (x[:1400], y[:1400])
    s = dict(SETTINGS, epochs=6)
    std = StandardTraining(**s).fit(mlp(), data)
    gf = GoodfellowTraining(alpha=0.5, eps=0.1, **s).fit(mlp(), data)
    from advlab.attacks import fgsm

    threat = ThreatModel("linf", 0.1)
    xt, yt = x[1400:], y[1400:]
    acc = {n: 1 - float(fgsm(t.model_, xt, yt, threat).success.float().mean()) for n, t in (("std", std), ("gf", gf))}
    assert acc["gf"] > acc["std"] + 0.1, acc


def test_eps_rampup_schedule_values():
    t = GoodfellowTraining(eps=0.3, eps_rampup=0.5, epochs=4)
    # linear from 0 to eps over the first 2 epochs, then constant
    assert [t.eps_at(e) for e in (0.0, 0.5, 1.0, 2.0, 3.5)] == pytest.approx([0.0, 0.075, 0.15, 0.3, 0.3])
    assert GoodfellowTraining(eps=0.3, epochs=4).eps_at(0.0) == 0.3
    assert t.settings()["eps_rampup"] == 0.5 and t.settings()["alpha"] == 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"eps": -0.1}, "eps"),
        ({"eps_rampup": 2.0}, "eps_rampup"),
        ({"norm": "L2"}, "norm"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GoodfellowTraining(**kwargs)


def test_unknown_defense_name():
    with pytest.raises(ValueError, match="goodfellow"):
        DEFENSES.get("goodfelow")
