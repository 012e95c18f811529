"""The penultimate-layer representations that the detection defenses cluster and project: the input of the last Linear.

Spectral signatures (Tran et al. 2018) and activation clustering (Chen et al. 2018) both read a network's
"learned representation": the activations of the last hidden layer. For an arbitrary ``nn.Module`` there is no
name for that layer, so :func:`penultimate_features` takes a general definition: **the input of the last
``nn.Linear`` module in registration order** (``model.modules()``), caught with a forward pre-hook. For every
network of :mod:`advlab.zoo`, for a :class:`~advlab.models.Classifier` wrapping one, and for the usual
``Sequential(..., Flatten(), Linear(...), ReLU(), Linear(hidden, classes))`` this is the last hidden layer; the
mean/std normalisation of a ``Classifier`` runs before it, as in any forward pass. Pass ``layer=`` to choose
another module (its input is taken).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from advlab.models import predict, set_mode

FEATURE_BATCH = 500
"""Examples per forward pass when extracting features."""


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, every submodule's own mode restored afterwards.

    Examples:
        >>> with evaluation_mode(net):
        ...     logits = net(x)
    """
    modes = {m: m.training for m in model.modules()}
    try:
        set_mode(model, False)
        yield model
    finally:
        for module, mode in modes.items():
            module.training = mode


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (the output layer of a classifier).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``model`` has no ``nn.Linear`` module (a TorchScript or exported program hides them, as do
            networks ending in a convolution): pass ``layer=`` or the features themselves.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"model: {type(model).__name__} has no nn.Linear layer, so its penultimate-layer features cannot be "
            "found (the input of the last Linear layer is taken); pass layer= (a module whose input is the "
            "representation) or compute the features yourself and pass features="
        )
    return linears[-1]


def penultimate_features(
    model: nn.Module, x: torch.Tensor, *, layer: nn.Module | None = None, batch_size: int = FEATURE_BATCH
) -> torch.Tensor:
    """The representation each input reaches just before ``layer`` (default: the last ``nn.Linear``), flattened.

    The model runs in eval mode without gradients (its modes are restored afterwards); the features come back
    on the CPU as float32, shape ``(N, D)``.

    Args:
        model: any classifier module, or a :class:`~advlab.models.Classifier`.
        x: the inputs, shape ``(N, ...)``.
        layer: the module whose input is the representation; default :func:`last_linear` of ``model``.
        batch_size: examples per forward pass.

    Returns:
        The features, ``(N, D)``.

    Raises:
        ValueError: no ``nn.Linear`` in ``model`` and no ``layer`` given; ``layer`` never ran in a forward pass.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> penultimate_features(net, torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 32])
    """
    target = last_linear(model) if layer is None else layer
    caught: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        caught.append(inputs[0].detach().flatten(1).float().cpu())

    handle = target.register_forward_pre_hook(hook)
    try:
        with evaluation_mode(model):
            predict(model, x, batch_size=batch_size, logits=True)
    finally:
        handle.remove()
    if not caught and x.shape[0] > 0:
        raise ValueError("layer: the module never ran in the model's forward pass; pass a module the model calls")
    return torch.cat(caught) if caught else torch.zeros(0, 0)


class Penultimate(nn.Module):
    """``model`` read up to ``layer`` (default its last ``nn.Linear``): a differentiable feature extractor.

    The forward pass runs the whole model and returns the input of ``layer``, flattened to ``(N, D)``, with its
    graph kept (what an attack that optimises in feature space, like feature collision, differentiates). The
    model's mode is left as it is (give it a model in eval mode).

    Args:
        model: any classifier module, or a :class:`~advlab.models.Classifier`.
        layer: the module whose input is the representation; default :func:`last_linear` of ``model``.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> Penultimate(net)(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 32])
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.layer = last_linear(model) if layer is None else layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input of ``layer`` for ``x``, flattened."""
        caught: list[torch.Tensor] = []

        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            caught.append(inputs[0])

        handle = self.layer.register_forward_pre_hook(hook)
        try:
            self.model(x)
        finally:
            handle.remove()
        if not caught:
            raise ValueError("layer: the module never ran in the model's forward pass; pass a module the model calls")
        return caught[-1].flatten(1)
