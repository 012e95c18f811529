"""Averaged-logit ensembles, ensemble adversarial training, the denoiser and the detector: composition,
artifacts, and the adaptive attacks that break the failing ones."""

from __future__ import annotations

import pytest
import torch
from _defense_helpers import digits, mlp, same_weights

from advlab import zoo
from advlab.attacks import pgd
from advlab.defenses import (
    DenoiserDefense,
    DetectorTraining,
    EnsembleAdversarialTraining,
    EnsembleTraining,
    StandardTraining,
)
from advlab.defenses.denoiser import load_denoised
from advlab.defenses.detector import accuracy_with_rejection, adaptive_attack
from advlab.defenses.ensemble import load_ensemble
from advlab.threat import ThreatModel

SETTINGS = dict(lr=1e-2, batch_size=64, progress=False, seed=4)


def _zoo_mlp(seed=0):
    return zoo.build_classifier("mlp", (1, 8, 8), 10, seed=seed, hidden=(32,))


def test_ensemble_members_train_as_alone_and_logits_average(tmp_path):
    x, y = digits()
    data = (x[:500], y[:500])
    t = EnsembleTraining(members=3, epochs=2, **SETTINGS).fit(_zoo_mlp(), data)
    alone = StandardTraining(epochs=2, **SETTINGS).fit(_zoo_mlp(), data)
    same_weights(t.ensemble_members_[0], alone.model_, exact=False)
    xb = x[1400:1420]
    with torch.no_grad():
        torch.testing.assert_close(t.model_(xb), torch.stack([m(xb) for m in t.ensemble_members_]).mean(0))
    zoo.save_model(t.ensemble_members_[0], tmp_path)
    t.save_artifacts(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(load_ensemble(tmp_path)(xb), t.model_(xb))
    with pytest.raises(ValueError, match="members"):
        EnsembleTraining(members=1)


def test_ensemble_adversarial_alternates_sources(tmp_path):
    x, y = digits()
    static = StandardTraining(epochs=2, **SETTINGS).fit(_zoo_mlp(seed=7), (x[:500], y[:500])).model_
    zoo.save_model(static, tmp_path / "static")
    t = EnsembleAdversarialTraining(
        static_models=[str(tmp_path / "static")], method="fgsm", eps=0.1, epochs=1, **SETTINGS
    )
    model = mlp()
    t.setup(model, x[:128], y[:128])  # 2 batches per epoch
    assert [t.source_at(e) for e in (0.0, 0.5, 1.0, 1.5)] == [0, 1, 0, 1]
    xb, yb = x[:16], y[:16]
    for epoch, source in ((0.0, model), (0.5, static)):
        xr = xb.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(source(xr), yb, reduction="sum"), xr)
        torch.testing.assert_close(t.perturb(model, xb, yb, epoch), (xb + 0.1 * g.sign()).clamp(0, 1))
    t2 = EnsembleAdversarialTraining(static_models=[static], eps=0.1, epochs=1, **SETTINGS).fit(
        mlp(), (x[:300], y[:300])
    )
    assert t2.settings()["static_models"] == ["mlp"] and t2.settings()["method"] == "rfgsm"
    with pytest.raises(ValueError, match="static_models"):
        EnsembleAdversarialTraining(static_models=[])
    with pytest.raises(ValueError, match="rfgsm_alpha"):
        EnsembleAdversarialTraining(static_models=[static], eps=0.1, rfgsm_alpha=0.2)


def test_denoiser_composition_is_broken_by_white_box_pgd(tmp_path):
    x, y = digits()
    clf = _zoo_mlp()
    t = DenoiserDefense(sigma=0.3, eps=0.2, hidden=8, epochs=4, **SETTINGS).fit(clf, (x[:1400], y[:1400]))
    defended = t.model_
    xt, yt = x[1400:1500], y[1400:1500]
    threat = ThreatModel("linf", 0.2)
    transfer = pgd(
        clf, xt, yt, threat, steps=20
    ).x_adv  # crafted on the classifier alone, the denoiser's training attack
    white_box = pgd(defended, xt, yt, threat, steps=20).x_adv  # through the differentiable composition
    with torch.no_grad():
        acc_transfer = float((defended(transfer).argmax(1) == yt).float().mean())
        acc_white = float((defended(white_box).argmax(1) == yt).float().mean())
        acc_clean = float((defended(xt).argmax(1) == yt).float().mean())
    assert acc_clean > 0.8
    assert acc_white < 0.2 and acc_white < acc_transfer
    zoo.save_model(clf, tmp_path)
    t.save_artifacts(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(load_denoised(tmp_path)(xt), defended(xt))


def test_detector_catches_plain_pgd_but_not_the_adaptive_attack():
    x, y = digits()
    t = DetectorTraining(eps=0.2, steps=5, classifier_epochs=4, epochs=10, **SETTINGS).fit(
        mlp(), (x[:1400], y[:1400]), (x[1400:], y[1400:])
    )
    combined = t.model_
    xt, yt = x[1400:1600], y[1400:1600]
    clean = accuracy_with_rejection(combined, xt, yt)
    assert clean["accuracy"] > 0.8 and clean["rejected"] < 0.2  # few false positives
    threat = ThreatModel("linf", 0.2)
    plain = pgd(combined.module.classifier, xt, yt, threat, steps=20).x_adv  # the attack the detector was trained on
    on_plain = accuracy_with_rejection(combined, plain, yt)
    assert on_plain["rejected"] > 0.6  # the detector works against the non-adaptive attack
    adaptive = adaptive_attack(combined, xt, yt, threat, steps=50, generator=torch.Generator().manual_seed(0))
    on_adaptive = accuracy_with_rejection(combined, adaptive, yt)
    assert threat.contains(adaptive, xt).all()
    assert on_adaptive["defended"] < on_plain["defended"] - 0.3  # misclassified and undetected
    assert combined(xt[:2]).shape == (2, 11)
