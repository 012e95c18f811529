"""Fast adversarial training (Wong et al. 2020): the random-start FGSM step, the cyclic default, and the
catastrophic-overfitting check on a constructed collapse (stop restores the last good weights; warn goes on)."""

from __future__ import annotations

import pytest
import torch
from _defense_helpers import digits, mlp

from advlab.defenses import FastFGSMTraining


class _Scripted(FastFGSMTraining):
    """The held-out PGD accuracy follows a script instead of being measured (a constructed collapse)."""

    script = (0.60, 0.70, 0.05, 0.65)

    def heldout_pgd_accuracy(self, model):
        return self.script[len(self.history_)]


def _snapshots(trainer_cls, **kw):
    snaps = []

    class Recording(trainer_cls):
        def end_epoch(self, model, epoch, record):
            snaps.append({k: v.clone() for k, v in model.module.state_dict().items()})
            return super().end_epoch(model, epoch, record)

    x, y = digits()
    t = Recording(eps=0.1, lr=1e-2, batch_size=128, progress=False, **kw).fit(mlp(), (x[:400], y[:400]))
    return t, snaps


def test_collapse_stops_and_restores_last_good_weights():
    t, snaps = _snapshots(_Scripted, epochs=4, on_overfit="stop")
    assert len(t.history_) == 3  # stopped after the collapse at epoch 3
    assert [h["check_pgd_accuracy"] for h in t.history_] == [0.60, 0.70, 0.05]
    assert t.history_[-1]["catastrophic_overfitting"] and t.history_[-1]["restored_epoch"] == 2
    for k, v in t.model_.module.state_dict().items():
        assert torch.equal(v, snaps[1][k])  # the weights after epoch 2, the best before the collapse
    assert not all(torch.equal(v, snaps[2][k]) for k, v in t.model_.module.state_dict().items())


def test_collapse_with_warn_goes_on():
    with pytest.warns(UserWarning, match="catastrophic overfitting"):
        t, _ = _snapshots(_Scripted, epochs=4, on_overfit="warn")
    assert len(t.history_) == 4
    assert t.history_[2].get("catastrophic_overfitting") and "catastrophic_overfitting" not in t.history_[3]


def test_noise_near_zero_early_is_not_a_collapse():
    # the first epochs of a cyclic schedule: the check accuracy is near 0 and moves by noise (0.012 -> 0.0)
    class Early(_Scripted):
        script = (0.012, 0.0, 0.5, 0.8)

    t, _ = _snapshots(Early, epochs=4, on_overfit="stop")
    assert len(t.history_) == 4 and not any(h.get("catastrophic_overfitting") for h in t.history_)


def test_measured_check_is_recorded_and_in_range():
    x, y = digits()
    t = FastFGSMTraining(eps=0.1, epochs=2, lr=1e-2, check_size=64, progress=False).fit(
        mlp(), (x[:400], y[:400]), (x[1400:], y[1400:])
    )
    accs = [h["check_pgd_accuracy"] for h in t.history_]
    assert all(0.0 <= a <= 1.0 for a in accs)
    # the check equals an independent PGD-10 from advlab.attacks.pgd with the same random start
    from advlab.attacks import pgd
    from advlab.threat import ThreatModel

    res = pgd(
        t.model_,
        x[1400:1464],
        y[1400:1464],
        ThreatModel("linf", 0.1),
        steps=10,
        step_size=0.025,
        generator=torch.Generator().manual_seed(2020),
    )
    assert accs[-1] == pytest.approx(1 - float(res.success.float().mean()))


def test_step_is_random_start_plus_fgsm_of_125_eps():
    x, y = digits()
    xb, yb = x[:16], y[:16]
    t = FastFGSMTraining(eps=0.2, progress=False)
    assert t.schedule == "cyclic" and t.step_size == pytest.approx(0.25)
    model = mlp()
    gen = t.generator_at(0.5, xb.device)
    start = t.threat.random_start(xb, gen)
    xr = start.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xr), yb, reduction="sum"), xr)
    expected = (xb + (start + 0.25 * g.sign() - xb).clamp(-0.2, 0.2)).clamp(0, 1)
    _, logits = t.training_step(model, xb, yb, 0.5)
    torch.testing.assert_close(logits, model(expected))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"on_overfit": "ignore"}, "on_overfit"),
        ({"overfit_drop": 2}, "overfit_drop"),
        ({"overfit_drop": 0}, "overfit_drop"),
        ({"eps": -1}, "eps"),
        ({"check_steps": 0}, "check_steps"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FastFGSMTraining(**kwargs)
