"""TRADES (Zhang et al. 2019): beta = 0 is standard training, the loss by hand, the inner maximisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _defense_helpers import digits, mlp, same_weights

from advlab.defenses import TRADES, StandardTraining
from advlab.defenses.trades import kl_to

SETTINGS = dict(epochs=2, lr=1e-2, batch_size=64, progress=False, seed=1)


def test_beta_zero_equals_standard_training():
    x, y = digits()
    data = (x[:500], y[:500])
    std = StandardTraining(**SETTINGS).fit(mlp(), data)
    trades = TRADES(beta=0.0, eps=0.1, steps=2, **SETTINGS).fit(mlp(), data)
    same_weights(std.model_, trades.model_)


def test_loss_matches_formula_and_kl_matches_torch():
    x, y = digits()
    xb, yb = x[:32], y[:32]
    model = mlp(seed=2)
    t = TRADES(beta=6.0, eps=0.1, steps=3, **SETTINGS)
    loss, _ = t.training_step(model, xb, yb, 0.0)
    x_adv = t.perturb(model, xb, 0.0)
    assert float((x_adv - xb).abs().max()) <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    # oracle: torch's KLDivLoss (batchmean) of the paper's reference code
    kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(model(xb), 1), reduction="batchmean")
    torch.testing.assert_close(kl_to(model(xb), model(x_adv)).mean(), kl)
    torch.testing.assert_close(loss, F.cross_entropy(model(xb), yb) + 6.0 * kl)


def test_inner_maximisation_increases_kl_over_the_start():
    x, _y = digits()
    xb = x[:64]
    model = mlp(seed=3)
    t = TRADES(eps=0.1, steps=10, **SETTINGS)
    gen = t.generator_at(0.0, xb.device)
    start = (xb + 0.001 * torch.randn(xb.shape, generator=gen)).clamp(0, 1)
    x_adv = t.perturb(model, xb, 0.0)
    with torch.no_grad():
        assert kl_to(model(xb), model(x_adv)).mean() > 100 * kl_to(model(xb), model(start)).mean()


@pytest.mark.parametrize("kwargs, match", [({"beta": -1.0}, "beta"), ({"eps": -0.1}, "eps"), ({"steps": 0}, "steps")])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TRADES(**kwargs)
