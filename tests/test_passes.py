"""The pass counter against hand counts on tiny models: attacks' forward and backward passes, counted in examples.

A hand count follows the attack boundary (:func:`advlab.attacks.base.attack_boundary`): one forward pass of the clean
batch before the core runs and one of the returned points after it; in between, the core's own passes.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from advlab import Classifier, ThreatModel
from advlab.attacks import fgsm, pgd
from advlab.evaluation import with_eot
from advlab.oracles import TorchOracle, as_module
from advlab.passes import CountedModule, PassCounter, Passes, count_passes, counter_of, counting

BOUNDARY_FORWARDS = 2
"""The attack boundary's forward passes per example: the clean look and the success check on the returned point."""
REUSED_CHECK_FORWARDS = 1
"""The same where the attack's last forward is the success check (PGD when one restart covered every example, BIM,
MI-FGSM: the check reads that forward's logits instead of running its own)."""


class Difference(nn.Module):
    """Two classes, logits ``[0, x0 - x1]``: from any input inside [0, 1]^d an linf ball of radius 1 reaches both."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 0] - x[:, 1]
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Linear(4, 3).eval()
    x = torch.rand(10, 4)
    return net, x, net(x).argmax(1).detach()


def _both(net: nn.Module) -> list[tuple[nn.Module, PassCounter]]:
    """The bare module counted, and advlab's Classifier of it counted."""
    return [count_passes(net), count_passes(Classifier(net).eval())]


def test_fgsm_is_one_forward_and_one_backward_per_example_plus_the_boundary():
    net, x, y = _linear()
    for model, counter in _both(net):
        fgsm(model, x, y, ThreatModel("linf", 0.01))
        assert counter.passes() == Passes(forward=len(x) * (1 + BOUNDARY_FORWARDS), backward=len(x))


@pytest.mark.parametrize("steps,restarts", [(5, 3), (1, 1), (7, 2)])
def test_pgd_hand_count_when_no_example_breaks(steps, restarts):
    """Every restart runs on every example: ``steps`` forward+backward, one final forward, per restart; with one
    restart the boundary's success check reuses the final forward."""
    net, x, y = _linear()
    for model, counter in _both(net):
        res = pgd(model, x, y, ThreatModel("linf", 1e-4), steps=steps, restarts=restarts, generator=0)
        assert not bool(res.success.any())
        n = len(x)
        boundary = REUSED_CHECK_FORWARDS if restarts == 1 else BOUNDARY_FORWARDS
        assert counter.passes() == Passes(n * (boundary + restarts * (steps + 1)), n * restarts * steps)


def test_pgd_hand_count_when_every_example_breaks_in_the_first_restart():
    """The later restarts run only on the examples not yet broken: here none."""
    net = Difference()
    torch.manual_seed(1)
    x = torch.rand(12, 3)
    y = net(x).argmax(1)
    for model, counter in _both(net):
        res = pgd(model, x, y, ThreatModel("linf", 1.0), steps=4, restarts=5, generator=0)
        assert bool(res.success.all())
        # one restart covered every example: the success check reuses its final forward
        assert counter.passes() == Passes(12 * (REUSED_CHECK_FORWARDS + 4 + 1), 12 * 4)


def test_wrapping_does_not_change_the_result():
    net, x, y = _linear()
    threat = ThreatModel("linf", 0.05)
    plain = pgd(net, x, y, threat, steps=5, restarts=2, generator=3).x_adv
    for model, _ in _both(net):
        assert torch.equal(pgd(model, x, y, threat, steps=5, restarts=2, generator=3).x_adv, plain)


def test_chunked_forwards_count_examples_not_calls():
    """On CPU a convolutional Classifier runs a batch of 300 in chunks: still 300 passes each way."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 512, 3), nn.Flatten(), nn.Linear(512 * 6 * 6, 3)).eval()
    x = torch.rand(300, 1, 8, 8)
    y = net(x).argmax(1).detach()
    counts = []
    for model, counter in _both(net):
        fgsm(model, x, y, ThreatModel("linf", 0.01))
        counts.append(counter.passes())
    # the bare module counted: the attack's Classifier of it also ran it on the one example that sized the chunks
    assert counts == [Passes(901, 300), Passes(900, 300)]
    inner, counter = count_passes(net)
    clf = Classifier(inner).eval()  # the counted module inside the Classifier: called chunk by chunk
    assert clf.chunk_count(x) == 4  # 72 KiB of conv output per example: chunks of 85
    fgsm(clf, x, y, ThreatModel("linf", 0.01))
    # three forwards of 300 in chunks, and the one example that sized the chunks, which the module really ran
    assert counter.passes() == Passes(901, 300)


def test_backward_is_counted_when_a_gradient_reaches_the_output_and_only_then():
    net, x, _ = _linear()
    model, counter = count_passes(Classifier(net).eval())
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    assert counter.passes() == Passes(10, 0)  # a forward with gradients on, no gradient taken
    torch.autograd.grad(out[:, 0].sum(), xg, retain_graph=True)
    assert counter.passes() == Passes(10, 10)
    out.sum().backward()
    assert counter.passes() == Passes(10, 20)  # a second gradient through the same output is a second pass
    with torch.no_grad():
        model(x)
    assert counter.passes() == Passes(20, 20)


def test_oracle_counts_its_queries_not_its_cached_answers():
    net, x, _ = _linear()
    oracle = TorchOracle(net, mode="scores")
    model, counter = count_passes(as_module(oracle))
    assert isinstance(model, Classifier)
    model(x)
    model(x)  # the same batch again: answered from the module's cache
    model(x[:4])
    assert counter.passes() == Passes(oracle.queries, 0) == Passes(14, 0)


def test_eot_counts_every_draw():
    net, x, _ = _linear()
    model, counter = count_passes(with_eot(Classifier(net).eval(), 5))
    out = model(x.clone().requires_grad_(True))
    out.sum().backward()
    assert counter.passes() == Passes(50, 50)


def test_counting_attaches_for_the_block_or_keeps_the_counter_there():
    net, x, _ = _linear()
    clf = Classifier(net).eval()
    with counting(clf) as counter:
        assert counter_of(clf) is counter
        clf(x)
    assert counter_of(clf) is None and counter.passes() == Passes(10, 0)
    clf2, mine = count_passes(clf)
    assert clf2 is clf
    with counting(clf) as counter:
        assert counter is mine
    assert counter_of(clf) is mine  # the counter attached before the block stays
    wrapped, counted = count_passes(net)
    assert isinstance(wrapped, CountedModule) and counter_of(Classifier(wrapped)) is counted


def test_bad_module_is_refused():
    with pytest.raises(TypeError, match="module: expected a torch.nn.Module"):
        count_passes(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="count_passes"), counting(nn.Linear(2, 2)):
        pass


class _HostSyncs(TorchFunctionMode):
    """Counts the calls that would make the host wait for an accelerator (as tests/attacks/test_host_sync.py does)."""

    SYNCING = frozenset({"item", "tolist", "nonzero", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"})

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.total += getattr(func, "__name__", "") in self.SYNCING
        return func(*args, **(kwargs or {}))


def test_counting_adds_no_host_sync():
    """The counts come from shapes: an attack counted makes exactly the host syncs it makes uncounted."""
    net, x, y = _linear()
    clf = Classifier(net).eval()
    syncs = []
    for counted in (False, True):
        with counting(clf) if counted else contextlib.nullcontext(), _HostSyncs() as mode:
            pgd(clf, x, y, ThreatModel("linf", 0.05), steps=10, restarts=2, generator=0)
        syncs.append(mode.total)
    assert syncs[0] == syncs[1] > 0  # the mode sees the syncs PGD makes (its restarts pick the examples left)
