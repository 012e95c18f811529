"""The attack boundary takes the success check of an iterative attack from its last forward (issue 18).

PGD, BIM and MI-FGSM forward the last iterate to learn whether it reached the goal; where that iterate is what the
attack returns, the boundary uses those logits instead of forwarding it again, and the result is what a forward of
its own gives.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import Classifier, ThreatModel
from advlab.attacks import bim, mifgsm, pgd
from advlab.goals import is_success

STEPS = 5


def _model() -> tuple[nn.Module, list[int]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    calls: list[int] = []
    net.register_forward_hook(lambda module, inputs, out: calls.append(inputs[0].shape[0]))
    return net, calls


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("attack", [pgd, bim, mifgsm])
def test_iterative_attacks_forward_steps_plus_two(attack):
    net, calls = _model()
    x, y = _data()
    result = attack(Classifier(net), x, y, ThreatModel("linf", 0.5), steps=STEPS)
    # the clean forward, one per step, the last iterate's: no forward of the boundary's own
    assert len(calls) == STEPS + 2
    with torch.no_grad():
        logits = net(torch.as_tensor(result.x_adv))
    assert torch.equal(result.logits, logits)
    assert torch.equal(torch.as_tensor(result.success), is_success(logits, y, False))


def test_the_boundary_forwards_itself_where_the_returned_point_is_not_the_last_iterate():
    net, calls = _model()
    x, y = _data()
    # a small ball and many restarts: some examples stay robust, so a second restart runs on them
    result = pgd(Classifier(net), x, y, ThreatModel("linf", 0.02), steps=STEPS, restarts=3)
    restarts_run = 1 + sum(1 for c in calls[1:] if c < x.shape[0]) // (STEPS + 1)
    assert restarts_run > 1
    assert calls[-1] == x.shape[0]  # the boundary's own success check, on every example
    with torch.no_grad():
        logits = net(torch.as_tensor(result.x_adv))
    assert torch.equal(result.logits, logits)


def test_reduced_precision_forwards_are_not_taken_for_the_success_check():
    net, calls = _model()
    x, y = _data()
    pgd(Classifier(net, precision="bf16"), x, y, ThreatModel("linf", 0.5), steps=STEPS)
    assert len(calls) == STEPS + 3  # the success check runs in fp32, apart from the attack's bf16 forwards
