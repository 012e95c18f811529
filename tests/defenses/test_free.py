"""Free adversarial training (Shafahi et al. 2019): replay semantics by hand, the epoch budget, the carried
perturbation, and resume after a mid-epoch kill equal to an uninterrupted run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _defense_helpers import digits, mlp, same_weights

from advlab.defenses import FreeTraining


def test_replays_match_the_algorithm_by_hand():
    """m = 2 on one batch from delta = 0: step 1 on x (its input gradient gives an FGSM step), step 2 on the
    FGSM example of the weights *before* step 1 — one gradient per replay serves both updates."""
    x, y = digits()
    xb, yb = x[:32], y[:32]
    eps, lr = 0.1, 0.05
    t = FreeTraining(m=2, eps=eps, epochs=2, lr=lr, optimizer="sgd", batch_size=32, progress=False)
    assert t.epochs == 2 and t.epochs_run == 1  # budget of 2 natural epochs / m = 2 replays: one pass
    t.fit(mlp(), (xb, yb))

    ref = mlp()
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9)
    delta = torch.zeros_like(xb)
    for _ in range(2):
        d = delta.clone().requires_grad_(True)
        loss = F.cross_entropy(ref((xb + d).clamp(0, 1)), yb)
        opt.zero_grad()
        loss.backward()
        delta = (d + eps * d.grad.sign()).clamp(-eps, eps).detach()
        opt.step()
    same_weights(t.model_, ref, exact=False)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))  # the trainer's data order (seed 0, epoch 0)
    torch.testing.assert_close(t.delta_, delta[order])
    assert float(t.delta_.abs().max()) == pytest.approx(eps)


def test_budget_and_settings():
    t = FreeTraining(m=4, epochs=10)
    assert t.epochs == 10 and t.epochs_run == math.ceil(10 / 4) and t.replays == 4
    s = t.settings()
    assert s["epochs"] == 10 and s["epochs_run"] == 3 and s["m"] == 4
    with pytest.raises(ValueError, match="m"):
        FreeTraining(m=0)
    with pytest.raises(ValueError, match="eps"):
        FreeTraining(eps=-0.1)


class _Killed(RuntimeError):
    pass


class _KillAfter(FreeTraining):
    def __init__(self, kill_at: int, **kw):
        super().__init__(**kw)
        self.kill_at, self.calls = kill_at, 0

    def training_step(self, model, x, y, epoch):
        self.calls += 1
        if self.calls == self.kill_at:
            raise _Killed
        return super().training_step(model, x, y, epoch)


def test_resume_after_mid_epoch_kill_matches_uninterrupted(tmp_path):
    x, y = digits()
    data = (x[:300], y[:300])
    settings = dict(m=2, eps=0.1, epochs=6, lr=1e-2, batch_size=64, eps_rampup=0.5, progress=False)
    full = FreeTraining(**settings).fit(mlp(), data)
    per_epoch = 2 * math.ceil(300 / 64)
    with pytest.raises(_Killed):
        _KillAfter(kill_at=per_epoch + 3, checkpoint_dir=tmp_path, **settings).fit(mlp(), data)
    resumed = FreeTraining(checkpoint_dir=tmp_path, **settings).fit(mlp(seed=5), data)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3]
    same_weights(full.model_, resumed.model_, exact=False)
    torch.testing.assert_close(full.delta_, resumed.delta_)


def test_checkpoint_of_other_configuration_is_refused(tmp_path):
    x, y = digits()
    FreeTraining(m=2, epochs=2, progress=False, checkpoint_dir=tmp_path).fit(mlp(), (x[:100], y[:100]))
    with pytest.raises(ValueError, match="another configuration"):
        FreeTraining(m=3, epochs=2, progress=False, checkpoint_dir=tmp_path).fit(mlp(), (x[:100], y[:100]))
