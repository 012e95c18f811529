"""Attack mode holds a CPU convolutional network's kernels channels-last, and gives the module back exactly as it was.

The oracles: the module's own tensors (the same storage, the same values, the same layout afterwards), the module
called in its own layout (the same logits and gradients up to float rounding), and the attack run with the layout
switched off (``cpu_channels_last = False``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advlab import Classifier, models
from advlab.attacks import pgd
from advlab.threat import ThreatModel


def _bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10),
    )  # fmt: skip
    net[1].running_mean.uniform_(-0.2, 0.2)
    net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


class StandardisedConv(nn.Conv2d):
    """Weight standardisation as it is often written: a ``view`` of the kernel, which a channels-last kernel refuses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.view(self.weight.size(0), -1)
        w = (w - w.mean(1, keepdim=True)).view_as(self.weight)
        return nn.functional.conv2d(x, w, self.bias, padding=1)


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _kernels(net: nn.Module) -> list[torch.Tensor]:
    return [p for p in net.parameters() if p.dim() == 4]


def test_kernels_are_channels_last_inside_and_the_same_tensors_after():
    net = _bn_net()
    before = [(p.data_ptr(), p.stride(), p.detach().clone()) for p in _kernels(net)]
    seen = []
    net[3].register_forward_pre_hook(
        lambda m, _a: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last))
    )
    clf = Classifier(net, num_classes=10)
    x, _ = _data()
    with clf.attack_mode():
        assert not net[3].weight.is_contiguous()
        clf(x)
    assert seen == [True]
    for p, (ptr, stride, values) in zip(_kernels(net), before):  # the module's own storage, not a copy of it
        assert p.data_ptr() == ptr and p.stride() == stride and torch.equal(p, values)


def test_logits_and_gradients_match_the_module_in_its_own_layout():
    net = _bn_net()
    x, y = _data()
    clf = Classifier(net, num_classes=10)
    xg = x.clone().requires_grad_(True)
    with clf.attack_mode():
        logits = clf(xg)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y), xg)
    xr = x.clone().requires_grad_(True)
    ref = net(xr)
    (ref_grad,) = torch.autograd.grad(nn.functional.cross_entropy(ref, y), xr)
    assert torch.allclose(logits, ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-8) and bool(ref_grad.abs().sum() > 0)


def test_what_an_attack_reports_is_exactly_what_the_module_computes():
    net = _bn_net()
    x, y = _data()
    with torch.no_grad():
        y[::2] = net(x)[::2].argmax(1)  # half of them right to begin with
    clf = Classifier(net, num_classes=10)
    seen = []
    net[3].register_forward_pre_hook(lambda m, _a: seen.append(m.weight.is_contiguous()))
    result = pgd(clf, x, y, ThreatModel("linf", 8 / 255), steps=5)
    # the clean forward and the last iterate's in the module's layout, the five steps in channels-last
    assert seen == [True] + [False] * 5 + [True]
    assert result.x_adv.is_contiguous()
    with torch.no_grad():  # to the bit: the clean and the final forward ran in the module's own layout
        assert torch.equal(result.logits, net(result.x_adv))
        assert torch.equal(result.correct, net(x).argmax(1) == y)
    assert torch.equal(result.success, result.logits.argmax(1) != y) and 0 < int(result.correct.sum()) < len(y)


def test_switched_off_for_a_classifier_and_for_all():
    net = _bn_net()
    clf = Classifier(net, num_classes=10)
    clf.cpu_channels_last = False
    with clf.attack_mode():
        assert net[3].weight.is_contiguous()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "CPU_CHANNELS_LAST", False)
        with Classifier(net, num_classes=10).attack_mode():
            assert net[3].weight.is_contiguous()


def test_one_channel_and_one_by_one_kernels_are_strided_channels_last_too():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 10)).eval()
    seen = []
    net[1].register_forward_pre_hook(lambda _m, a: seen.append(a[0].stride()))
    clf = Classifier(net, num_classes=10)
    with clf.attack_mode():  # contiguous in both formats, but torch reads the format off the strides
        assert [p.stride() for p in _kernels(net)] == [(9, 1, 3, 1), (4, 1, 4, 4)]
        clf(torch.rand(2, 1, 8, 8))
    assert seen == [(144, 1, 24, 4)]  # the first convolution passed channels-last activations on
    assert [p.stride() for p in _kernels(net)] == [(9, 9, 3, 1), (4, 1, 1, 1)]


def test_nested_blocks_and_an_error_restore_the_layout_once():
    net = _bn_net()
    ptr = net[3].weight.data_ptr()
    clf = Classifier(net, num_classes=10)
    with pytest.raises(RuntimeError, match="inside"), clf.attack_mode():
        with clf.attack_mode():  # the inner block leaves the layout to the outer one
            assert not net[3].weight.is_contiguous()
        assert not net[3].weight.is_contiguous()
        raise RuntimeError("inside")
    assert net[3].weight.data_ptr() == ptr and net[3].weight.is_contiguous() and clf._layout_swap == []


def test_a_classifier_built_channels_last_has_nothing_to_swap():
    net = _bn_net()
    clf = Classifier(net, num_classes=10, channels_last=True)
    ptr = net[3].weight.data_ptr()
    with clf.attack_mode():
        assert clf._layout_swap == [] and net[3].weight.data_ptr() == ptr


def test_a_copy_made_in_attack_mode_owns_no_swap():
    clf = Classifier(_bn_net(), num_classes=10)
    with clf.attack_mode():
        twin = copy.deepcopy(clf)
    assert twin._layout_swap == [] and clf._layout_swap == []
    x, _ = _data()
    with torch.no_grad():
        assert torch.allclose(twin(x), clf(x), rtol=1e-5, atol=1e-6)


def test_a_module_that_views_its_kernel_falls_back_to_its_own_layout():
    torch.manual_seed(0)
    net = nn.Sequential(StandardisedConv(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()
    x, y = _data()
    with pytest.raises(RuntimeError, match="view"):  # what the module does with a channels-last kernel
        net[0].weight.data = net[0].weight.data.contiguous(memory_format=torch.channels_last)
        net(x)
    net[0].weight.data = net[0].weight.data.contiguous()
    clf = Classifier(net, num_classes=10)
    result = pgd(clf, x, y, ThreatModel("linf", 8 / 255), steps=5)
    assert (
        clf.cpu_channels_last is False and clf.speed()["cpu_channels_last"] is False and net[0].weight.is_contiguous()
    )
    plain = Classifier(net, num_classes=10)
    plain.cpu_channels_last = False
    expected = pgd(plain, x, y, ThreatModel("linf", 8 / 255), steps=5)
    assert torch.equal(result.x_adv, expected.x_adv) and torch.equal(result.success, expected.success)
