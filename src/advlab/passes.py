"""Counting what an attack or an evaluation costs: forward and backward passes of the model, counted in examples.

One example through the model once is one forward pass; one example's gradient back through the model is one
backward pass: the unit of AutoAttack's and A3's (Liu et al. 2022, arXiv:2203.05154) cost comparisons, which,
unlike wall time, compares across machines. A batch of 250 examples run forward is 250 forward passes, whether the
model runs it in one call or in chunks.

A :class:`PassCounter` counts where it is attached. A module *counts itself* when it has a ``pass_counter``
attribute (:class:`advlab.Classifier`, the EOT average of :func:`advlab.evaluation.with_eot`, an oracle's module,
the wrapper :class:`CountedModule`) and does so while that attribute holds a counter: forward passes from the
batch size of every call, backward passes from a hook on its output (the counter learns of a backward pass when a
gradient actually reaches the output, never by a guess). An oracle's module counts the queries it sends, which
are its forward passes, and has no backward pass. The counts are Python integers taken from shapes, never from
tensor values: counting adds no host synchronisation to an attack's steps, and a model without a counter attached
pays one attribute read per call.

:func:`count_passes` counts any ``torch.nn.Module``, advlab's or not, so other libraries' attacks (a reference
AutoAttack, torchattacks) can be counted on the same terms as advlab's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Passes:
    """Forward and backward passes of a model, counted in examples.

    Attributes:
        forward: examples run forward through the model.
        backward: examples whose gradient went back through the model.

    Examples:
        >>> Passes(300, 100) + Passes(20, 0)
        Passes(forward=320, backward=100)
    """

    forward: int = 0
    backward: int = 0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.forward + other.forward, self.backward + other.backward)

    def __sub__(self, other: Passes) -> Passes:
        return Passes(self.forward - other.forward, self.backward - other.backward)

    @property
    def total(self) -> int:
        """Forward plus backward passes."""
        return self.forward + self.backward

    def to_dict(self) -> dict[str, int]:
        """``{"forward": ..., "backward": ...}`` (JSON-ready)."""
        return {"forward": self.forward, "backward": self.backward}

    @classmethod
    def of(cls, d: dict[str, Any] | None) -> Passes:
        """The passes of a :meth:`to_dict` dict (zero for ``None`` or missing keys)."""
        d = d or {}
        return cls(int(d.get("forward", 0)), int(d.get("backward", 0)))


class PassCounter:
    """Forward and backward passes of the modules it is attached to, counted in examples (see the module's text).

    Attributes:
        forward: examples run forward so far.
        backward: examples whose gradient went back so far.

    Examples:
        >>> model, counter = count_passes(net)
        >>> result = advlab.attacks.fgsm(model, x, y, threat)
        >>> counter.passes()   # Passes(forward=3 * len(x), backward=len(x))
    """

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def count(self, n: int, out: Any = None) -> None:
        """One call of a counted module: ``n`` examples forward, and a hook that counts the backward pass of ``out``.

        Args:
            n: the examples in the call (its batch size).
            out: the call's output; when it is a tensor that requires grad, each gradient that reaches it counts
                its first dimension as backward passes. ``None`` for a call that has no backward pass (a query).
        """
        self.forward += n
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(self._backward)

    def _backward(self, grad: torch.Tensor) -> None:
        self.backward += grad.shape[0] if grad.dim() else 1

    def passes(self) -> Passes:
        """The passes counted so far."""
        return Passes(self.forward, self.backward)

    def reset(self) -> None:
        """Set both counts back to zero."""
        self.forward = self.backward = 0

    def __repr__(self) -> str:
        return f"PassCounter(forward={self.forward}, backward={self.backward})"


class CountedModule(nn.Module):
    """``module`` with every call counted by ``counter`` (what :func:`count_passes` wraps a plain module in).

    The batch size of a call is the first dimension of its first tensor argument; the backward passes are counted
    on its output (a tensor, or the first tensor of a tuple, list or dict output).

    Args:
        module: any ``torch.nn.Module``.
        counter: the counter (``None``: counting is off until one is attached).
    """

    def __init__(self, module: nn.Module, counter: PassCounter | None = None) -> None:
        super().__init__()
        self.module = module
        self.pass_counter = counter

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.module(*args, **kwargs)
        counter = self.pass_counter
        if counter is not None:
            counter.count(_batch_size(args, kwargs), _first_tensor(out))
        return out


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((v for v in items if isinstance(v, torch.Tensor)), None)


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    t = _first_tensor(list(args) + list(kwargs.values()))
    return int(t.shape[0]) if t is not None and t.dim() else 1


def counts_itself(module: nn.Module) -> bool:
    """Whether ``module`` counts its own passes (it has a ``pass_counter`` attribute)."""
    return hasattr(module, "pass_counter")


def counting_site(module: nn.Module) -> nn.Module:
    """The module that counts ``module``'s passes: the innermost of the wrappers that count themselves.

    A wrapper that counts itself (a ``Classifier``, an EOT average) around an inner ``module`` that counts itself
    too (an oracle's module, which counts queries; a :class:`CountedModule`; the EOT average, which counts each
    draw) leaves the counting to the inner one, so no pass is counted twice.

    Args:
        module: a module that counts itself.
    """
    site = module
    inner = getattr(site, "module", None)
    while isinstance(inner, nn.Module) and counts_itself(inner):
        site, inner = inner, getattr(inner, "module", None)
    return site


def counter_of(module: nn.Module) -> PassCounter | None:
    """The counter attached to ``module`` (at its :func:`counting_site`), or ``None``.

    Args:
        module: any module.
    """
    if not counts_itself(module):
        return None
    return _attached(counting_site(module))


def _attached(site: nn.Module) -> PassCounter | None:
    counter = getattr(site, "pass_counter", None)
    return counter if isinstance(counter, PassCounter) else None


def count_passes(module: nn.Module, counter: PassCounter | None = None) -> tuple[nn.Module, PassCounter]:
    """``module`` with its forward and backward passes counted, and the counter.

    A module that counts itself (an :class:`advlab.Classifier`, an oracle's module) gets the counter attached and
    comes back as it is, so a ``Classifier`` stays one; any other module comes back wrapped in a
    :class:`CountedModule`. Either way the counts are the same: examples forward, examples backward.

    Args:
        module: any ``torch.nn.Module``.
        counter: the counter to count into (default: the one already attached, else a new one).

    Returns:
        ``(model, counter)``: call ``model`` in place of ``module``.

    Raises:
        TypeError: ``module`` is not a ``torch.nn.Module``.

    Examples:
        >>> model, counter = count_passes(net)               # any module: a reference AutoAttack's, torchattacks'
        >>> x_adv = torchattacks.PGD(model, eps=0.3)(x, y)
        >>> counter.forward, counter.backward
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if not counts_itself(module):
        counter = counter or PassCounter()
        return CountedModule(module, counter), counter
    site = counting_site(module)
    counter = counter or _attached(site) or PassCounter()
    setattr(site, "pass_counter", counter)  # noqa: B010 (a module's attribute that nn.Module's stubs do not know)
    return module, counter


@contextlib.contextmanager
def counting(module: nn.Module, counter: PassCounter | None = None) -> Iterator[PassCounter]:
    """Count ``module``'s passes for the block: yields the counter attached to it, or attaches one (``counter``, or
    a new one) for the block and takes it off afterwards.

    Args:
        module: a module that counts itself (an :class:`advlab.Classifier`).
        counter: the counter to attach when ``module`` has none (default: a new one).

    Raises:
        TypeError: ``module`` does not count itself (wrap it with :func:`count_passes` instead).

    Examples:
        >>> with counting(clf) as counter:
        ...     before = counter.passes()
        ...     result = advlab.attacks.pgd(clf, x, y, threat)
        >>> counter.passes() - before
    """
    if not counts_itself(module):
        raise TypeError(
            f"module: {type(module).__name__} does not count its passes; wrap it with count_passes(module) or "
            "advlab.Classifier(module)"
        )
    site = counting_site(module)
    attached = _attached(site)
    if attached is not None:
        yield attached
        return
    counter = counter or PassCounter()
    setattr(site, "pass_counter", counter)  # noqa: B010
    try:
        yield counter
    finally:
        setattr(site, "pass_counter", None)  # noqa: B010
