"""Defensive distillation (Papernot et al. 2016): teacher at T, student on the soft labels at T, deployed at T = 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _defense_helpers import digits, mlp

from advlab.defenses import DefensiveDistillation


@pytest.fixture(scope="module")
def distilled():
    x, y = digits()
    t = DefensiveDistillation(temperature=20.0, epochs=8, lr=1e-2, progress=False).fit(mlp(), (x[:1400], y[:1400]))
    return t, x[1400:], y[1400:]


def test_student_matches_teacher_soft_labels(distilled):
    t, x, y = distilled
    soft = t.soft_labels(x)
    student = F.softmax(t.model_(x) / t.temperature, 1)
    kl = (soft * (soft.log() - student.log())).sum(1).mean()
    uniform = torch.full_like(soft, 0.1)
    kl_chance = (soft * (soft.log() - uniform.log())).sum(1).mean()
    assert kl < 0.2 * kl_chance
    assert (student.argmax(1) == soft.argmax(1)).float().mean() > 0.9
    assert (t.model_(x).argmax(1) == y).float().mean() > 0.7  # few epochs at T = 20: well above chance (0.1)


def test_deployed_model_outputs_raw_logits_at_t_one(distilled):
    t, x, _ = distilled
    torch.testing.assert_close(t.model_(x), t.model_.module(x))  # no temperature inside the saved model
    # at T = 1 the logits are ~T times larger than the teacher's training-scale logits: a saturated softmax
    p = F.softmax(t.model_(x), 1).detach()
    assert float(p.max(1).values.mean()) > 0.95
    assert float(F.softmax(t.model_(x).detach() / t.temperature, 1).max(1).values.mean()) < float(
        p.max(1).values.mean()
    )


def test_teacher_is_separate_and_frozen(distilled):
    t, _, _ = distilled
    assert t.teacher_ is not t.model_
    assert not any(p.requires_grad for p in t.teacher_.parameters())
    assert t.settings()["temperature"] == 20.0


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="temperature"):
        DefensiveDistillation(temperature=temperature)
