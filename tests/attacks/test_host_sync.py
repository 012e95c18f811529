"""No host synchronisation inside attack loops (issue 15): the syncs an attack makes do not grow with its steps.

On an accelerator, every ``.item()``, ``bool(tensor)``, ``int(tensor)``, ``.tolist()``, ``.nonzero()``, boolean-mask
indexing or ``.cpu()`` makes the host wait for the device. On the CPU nothing waits, so these tests count the calls
that would wait (a ``TorchFunctionMode`` sees every tensor method) and the model's forward passes, for the same
attack with 10 and with 40 steps. The extra syncs of the longer run must stay within the attack's allowance: the
looks at an early stop every :data:`~advlab.attacks.base.SYNC_EVERY` iterations, plus, for the attacks that forward
only the examples still being attacked (they must learn how many there are), a fixed number per forward pass. The
loops take their accelerator path here (on the CPU they look at their early stop every iteration, which is free).
"""

from __future__ import annotations

import collections
import copy
import math
import warnings
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

import advlab.attacks.base
from advlab import ThreatModel
from advlab.attacks.base import SYNC_EVERY
from advlab.attacks.registry import make_attack
from advlab.rng import ExampleRNG

SYNCING = {"item", "tolist", "nonzero", "argwhere", "masked_select", "cpu", "numpy"}
"""Tensor methods and torch functions that copy a result to the host (a sync on an accelerator)."""
SYNCING_DUNDERS = {"__bool__", "__int__", "__float__", "__index__"}
"""Python conversions of a tensor (``if t.any():``, ``int(t)``...): they need its value on the host."""

SHORT, LONG = 10, 40


def _has_mask(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in items)


class HostSyncs(TorchFunctionMode):
    """Counts, by name, the calls inside the ``with`` block that would make the host wait for a device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING or name in SYNCING_DUNDERS:
            self.calls[name] += 1
        elif name in ("__getitem__", "__setitem__") and _has_mask(args[1]):  # x[mask]: its size is on the device
            self.calls[name + "[mask]"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _count(model, x, y, name: str, norm: str, eps: float, settings: dict[str, Any]) -> tuple[HostSyncs, int]:
    """The host syncs and the forward passes of one attack call."""
    forwards = [0]
    hook = model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    try:
        attack = make_attack(name, norm=norm, **settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-gradient and suspicious-model warnings are not the point here
            with HostSyncs() as syncs:
                attack(model, x, y, ThreatModel(norm, eps), generator=0)
    finally:
        hook.remove()
    return syncs, forwards[0]


# (attack, norm, eps, settings, runs, syncs allowed per forward pass)
# runs: how many loops of `steps` iterations the call makes (each may look at an early stop every SYNC_EVERY).
# per forward: 0 for the loops that never ask the device; Square and C&W L∞ forward only the examples still being
# attacked, so an iteration learns their number (Square: whether any was fooled; C&W L∞: how many are unfinished
# and how many were accepted).
CASES = [
    ("pgd", "linf", 0.05, {}, 1, 0),
    ("pgd", "l2", 0.5, {"restarts": 2}, 2, 0),
    ("pgd", "l1", 2.0, {}, 1, 0),
    ("bim", "linf", 0.05, {}, 1, 0),
    ("mifgsm", "l2", 0.5, {}, 1, 0),
    ("apgd", "linf", 0.03, {}, 1, 0),
    ("apgd", "l2", 0.3, {"loss": "dlr"}, 1, 0),
    ("apgd", "l1", 1.0, {}, 1, 0),
    ("apgd-t", "linf", 0.03, {"n_target_classes": 2}, 2, 0),
    ("cw-l2", "l2", 3.0, {"binary_search_steps": 2, "abort_early": False}, 2, 0),
    ("fmn", "linf", 1.0, {}, 1, 0),
    ("fmn", "l1", 3.0, {}, 1, 0),
    ("fmn", "l0", 8, {}, 1, 0),
    ("deepfool", "l2", 3.0, {}, 1, 1),
    ("cw-linf", "linf", 0.5, {}, 1, 2),
    ("square", "linf", 0.03, {}, 1, 1),
]


@pytest.fixture
def accelerator_path(monkeypatch):
    """Attack loops behave as on an accelerator: no device counts as one whose results the host reads for free."""
    monkeypatch.setattr(advlab.attacks.base, "FREE_SYNC_DEVICES", frozenset())


def test_the_counter_sees_what_waits_for_the_device():
    t = torch.tensor([0.0, 1.0, 2.0])
    with HostSyncs() as syncs:
        if t.any():
            float(t[1])
        t[t > 0] = 3.0
        t.nonzero()
        t.sum().item()
        torch.where(t > 0, t, -t).clamp(0, 1)  # device-side arithmetic: nothing waits
    assert syncs.calls == {"__bool__": 1, "__float__": 1, "__setitem__[mask]": 1, "nonzero": 1, "item": 1}


@pytest.mark.parametrize(("name", "norm", "eps", "settings", "runs", "per_forward"), CASES, ids=lambda v: str(v))
@pytest.mark.usefixtures("accelerator_path")
def test_host_syncs_do_not_grow_with_steps(mlp_model, digits_batch, name, norm, eps, settings, runs, per_forward):
    x, y = digits_batch
    key = "max_queries" if name == "square" else "steps"
    short, f_short = _count(mlp_model, x, y, name, norm, eps, {**settings, key: SHORT})
    long, f_long = _count(mlp_model, x, y, name, norm, eps, {**settings, key: LONG})
    looks = runs * math.ceil((LONG - SHORT) / SYNC_EVERY)
    allowed = looks + per_forward * (f_long - f_short)
    extra = long.calls - short.calls
    assert long.total - short.total <= allowed, (
        f"{name} ({norm}): {LONG} steps make {long.total - short.total} more host syncs than {SHORT} "
        f"(allowed {allowed}: {looks} early-stop looks, {per_forward} per forward pass); the extra ones: {dict(extra)}"
    )


@pytest.mark.parametrize(
    ("norm", "eps", "keyed"), [("linf", 0.3, False), ("linf", 0.3, True), ("l2", 1.5, False), ("l1", 6.0, True)]
)
def test_apgd_returns_the_same_whether_it_looks_at_its_stop_every_iteration_or_not(
    mlp_model, digits_batch, monkeypatch, norm, eps, keyed
):
    """The accelerator path goes on up to SYNC_EVERY - 1 iterations after every example has succeeded (here: within
    the first few steps); those iterations leave the result as it was when the last example succeeded."""
    x, y = digits_batch
    threat = ThreatModel(norm, eps)

    def run():
        generator = ExampleRNG(7, "apgd", torch.arange(len(y))) if keyed else torch.Generator().manual_seed(7)
        return make_attack("apgd", norm=norm, steps=20, restarts=2)(mlp_model, x, y, threat, generator=generator)

    cpu = run()
    monkeypatch.setattr(advlab.attacks.base, "FREE_SYNC_DEVICES", frozenset())
    accelerator = run()
    assert bool(cpu.success.all()) and len(cpu.loss_trace) < SYNC_EVERY  # the run finished between two looks
    assert torch.equal(cpu.x_adv, accelerator.x_adv)
    assert torch.equal(cpu.success, accelerator.success)
    assert torch.equal(cpu.loss_trace, accelerator.loss_trace)


def _sync_warnings(run) -> int:
    """How many synchronising CUDA operations ``run()`` makes (``torch.cuda.set_sync_debug_mode('warn')``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.cuda
@pytest.mark.parametrize(("name", "norm"), [("pgd", "linf"), ("pgd", "l1"), ("apgd", "linf"), ("apgd", "l1")])
def test_pgd_and_apgd_loops_do_not_synchronise_on_cuda(mlp_model, digits_batch, name, norm):
    """PyTorch's own sync detector: the synchronising CUDA calls do not grow with the steps (the boundary's checks
    and the early-stop looks aside)."""
    x, y = (t.cuda() for t in digits_batch)
    model = copy.deepcopy(mlp_model).to("cuda")  # the fixture is shared: leave it on the CPU
    threat = ThreatModel(norm, 0.03 if norm == "linf" else 1.0)
    counts = []
    for steps in (SHORT, LONG):
        attack = make_attack(name, norm=norm, steps=steps)
        counts.append(_sync_warnings(lambda: attack(model, x, y, threat, generator=0)))  # noqa: B023
    assert counts[1] - counts[0] <= math.ceil((LONG - SHORT) / SYNC_EVERY), counts
