"""Attack registration: configs derived from signatures, aliases, private (unregistered) attacks."""

from __future__ import annotations

import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import ALIASES, ATTACKS, PGD, make_attack, register_attack, run_attack
from advlab.goals import LeastLikely
from advlab.settings import PositiveInt


def _shift(model, x, labels, targeted, threat, *, amount):
    return x + amount * threat.eps


@register_attack("Shift", norms=("linf",), paper="a test", register=False, renamed={"size": "amount"})
def shift(model, x, y, threat, *, goal=None, amount: PositiveInt = 1, generator=None):
    """Move every input by ``amount * eps``.

    Args:
        model: the model.
        x: inputs.
        y: labels.
        threat: the threat model.
        goal: the goal.
        amount: multiples of eps to move.
        generator: unused.
    """
    return run_attack(_shift, model, x, y, threat, goal=goal, amount=amount)


def test_a_private_attack_gets_a_config_but_is_not_registered(mlp_model, digits_batch):
    assert "shift" not in ATTACKS
    Shift = shift.config
    assert Shift().settings() == {"amount": 1} and Shift.norms == ("linf",) and Shift.__name__ == "Shift"
    x, y = digits_batch
    res = Shift(amount=1)(mlp_model, x[:4], y[:4], ThreatModel("linf", 0.05, (-1.0, 2.0)))
    assert torch.allclose(torch.as_tensor(res.x_adv), x[:4] + 0.05)
    with pytest.raises(ValueError, match="amount: expected an int >= 1"):
        shift(mlp_model, x[:4], y[:4], ThreatModel("linf", 0.05), amount=0)
    with pytest.raises(ValueError, match="does not support norm 'l2'"):
        shift(mlp_model, x[:4], y[:4], ThreatModel("l2", 0.05))
    with pytest.warns(FutureWarning, match="'size' is now called 'amount'"):
        assert Shift(size=2).amount == 2


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_attack("PGD2", name="pgd", norms=("linf",), paper="x")(shift.__wrapped__)


def test_aliases_fix_settings_or_the_goal_and_refuse_changing_them():
    assert make_attack("apgd-ce", steps=7).settings()["loss"] == "ce"
    assert make_attack("apgd-ce", steps=7).steps == 7
    with pytest.raises(ValueError, match="loss is fixed by this alias"):
        make_attack("apgd-ce", loss="dlr")
    illc = make_attack("illc")
    assert isinstance(illc.goal, LeastLikely) and type(illc).name == "bim"
    assert make_attack("cw", norm="l2").name == "cw-l2" and make_attack("cw", norm="linf").name == "cw-linf"
    with pytest.raises(ValueError, match="one attack per norm.*give the norm"):
        make_attack("cw")
    with pytest.raises(ValueError, match="unknown attack 'pgdd'.*Did you mean 'pgd'"):
        make_attack("pgdd")
    assert set(ALIASES) >= {"apgd-ce", "apgd-dlr", "illc", "cw"}


def test_a_fixed_goal_refuses_another_goal(mlp_model, digits_batch):
    from advlab import Targeted

    x, y = digits_batch
    with pytest.raises(ValueError, match="^goal: .* fixed to 'least-likely'"):
        make_attack("illc")(mlp_model, x[:4], y[:4], ThreatModel("linf", 0.1), goal=Targeted((y[:4] + 1) % 10))


def test_configs_are_frozen_values():
    a, b = PGD(steps=10), PGD(steps=10)
    assert a == b and hash(a) == hash(b) and a != PGD(steps=11)
    with pytest.raises(AttributeError):
        a.steps = 3
    with pytest.raises(TypeError, match="no setting 'n_steps' \\(did you mean 'steps'\\?\\)"):
        PGD(n_steps=3)
