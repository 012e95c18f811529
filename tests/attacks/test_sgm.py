"""The skip gradient method: its backward pass against residual blocks rewritten by hand, its limit gamma = 1 (the
base attack bit for bit), its forward pass untouched, and its refusals."""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab import Classifier, ThreatModel
from advlab.attacks import mifgsm, sgm
from advlab.attacks.sgm import residual_blocks, skip_gradient_decay
from advlab.zoo import build_classifier
from advlab.zoo.resnet import PreActBlock


@pytest.fixture(scope="module")
def resnet() -> Classifier:
    """The zoo's pre-activation ResNet-18 (untrained; BatchNorm statistics set away from the defaults)."""
    clf = build_classifier("preact-resnet18", (3, 16, 16), 10, seed=0)
    g = torch.Generator().manual_seed(1)
    for m in clf.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(m.num_features, generator=g))
    return clf.eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(2)
    return torch.rand(6, 3, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g)


def _decayed_forward(self: PreActBlock, x: torch.Tensor, gamma: float) -> torch.Tensor:
    """The block written out: skip + gamma * residual, the rest of the residual's value without gradient."""
    out = F.relu(self.bn1(x))
    skip = self.shortcut(out) if self.shortcut is not None else x
    residual = self.conv2(F.relu(self.bn2(self.conv1(out))))
    return skip + gamma * residual + (1 - gamma) * residual.detach()


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad


def test_finds_the_eight_blocks_of_preact_resnet18(resnet):
    blocks = residual_blocks(resnet)
    assert len(blocks) == 8 and all(isinstance(b, PreActBlock) for b in blocks)
    assert sum(b.shortcut is not None for b in blocks) == 3  # the first block of stages 2-4 projects


@pytest.mark.parametrize("gamma", [0.2, 0.5])
def test_gradient_matches_blocks_rewritten_by_hand(gamma, resnet, images):
    x, y = images
    with skip_gradient_decay(residual_blocks(resnet), gamma):
        got = _input_grad(resnet, x, y)
    reference = copy.deepcopy(resnet)
    for block in residual_blocks(reference):
        block.forward = types.MethodType(lambda self, h, g=gamma: _decayed_forward(self, h, g), block)
    want = _input_grad(reference, x, y)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(got, _input_grad(resnet, x, y), rtol=1e-2)  # and it is not the plain gradient


def test_forward_is_unchanged_and_hooks_are_removed(resnet, images):
    x, _ = images
    plain = resnet(x)
    with skip_gradient_decay(residual_blocks(resnet), 0.2):
        decayed = resnet(x.clone().requires_grad_(True))
    assert torch.equal(decayed.detach(), plain.detach())
    assert all(not b._forward_hooks for b in resnet.modules())


def test_gamma_one_is_the_base_attack_bit_for_bit(resnet, images):
    x, y = images
    threat = ThreatModel("linf", 8 / 255)
    for momentum in (0.0, 1.0):
        got = sgm(resnet, x, y, threat, gamma=1.0, momentum=momentum, steps=3).x_adv
        assert torch.equal(got, mifgsm(resnet, x, y, threat, momentum=momentum, steps=3).x_adv)
    assert not torch.equal(sgm(resnet, x, y, threat, steps=3).x_adv, got)


def test_user_given_blocks(images):
    """A residual module with no shortcut attribute: found only when given, decayed like the hand-written one."""

    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Sequential(nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 12))

        def forward(self, h):
            return h + self.f(h)

    with torch.random.fork_rng():  # PyTorch's default init draws from the global RNG
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 12), Res(), Res(), nn.Linear(12, 10)).eval()
    x, y = images
    assert residual_blocks(net) == []
    with pytest.raises(ValueError, match="^model: SGM decays the gradient through residual blocks and found none"):
        sgm(net, x, y, ThreatModel("linf", 0.1))
    with skip_gradient_decay([net[2], net[3]], 0.3):
        got = _input_grad(net, x, y)
    ref = copy.deepcopy(net)
    for block in (ref[2], ref[3]):
        block.forward = types.MethodType(lambda self, h: h + 0.3 * self.f(h) + 0.7 * self.f(h).detach(), block)
    torch.testing.assert_close(got, _input_grad(ref, x, y), rtol=1e-4, atol=1e-7)
    result = sgm(net, x, y, ThreatModel("linf", 0.1), blocks=[net[2], net[3]])
    assert result.x_adv.shape == x.shape
    with pytest.raises(ValueError, match="^blocks: Linear maps"):
        sgm(net, x, y, ThreatModel("linf", 0.1), blocks=[net[1]])
