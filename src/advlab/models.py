"""The model wrapper that owns the input domain: raw inputs in, logits out, normalisation inside.

Attacks see a :class:`Classifier`, so eps is always measured in raw input space (pixels in [0, 1]) whatever
normalisation the network expects. :meth:`Classifier.attack_mode` puts the network in eval mode with parameter
gradients off and restores everything afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from advlab import validation

log = logging.getLogger(__name__)

CPU_FORWARD_CHUNK = 128
"""Eval-mode forwards of convolutional networks on CPU run in chunks of this many examples. One batch of several
hundred images spills the activations out of the CPU caches, and each image then costs up to 2x more without
gradients and up to 1.5x more with them (bench/forward_chunks.py, BENCHMARKS.md). Score-based attacks such as
Square spend nearly all their time in gradient-free forwards, gradient attacks in forwards with gradients, whose
backward pass then runs chunk by chunk as well. Networks without convolutions (an MLP, bound by its matrix
products, loses 4-8% to the extra calls), train mode (batch norm statistics) and other devices are left as they
are.
"""

PREDICT_BATCH = 512
"""Examples per forward pass of :func:`predict`."""


class Classifier(nn.Module):
    """A classifier on raw inputs: ``logits = module((x - mean) / std)``.

    Args:
        module: any ``torch.nn.Module`` mapping a batch to logits of shape ``(N, num_classes)``.
        mean: optional per-channel mean subtracted before ``module`` (sequence, one value per channel).
        std: optional per-channel standard deviation divided by before ``module``.
        bounds: the valid input range, used as the box of threat models built without bounds for this model. Either
            side may be infinite: ``(float("-inf"), float("inf"))`` for standardised tabular features, whose
            perturbations the norm ball alone then bounds.
        num_classes: number of output classes; inferred from the first forward pass when omitted.
        input_shape: per-example input shape ``(C, H, W)`` or ``(D,)``; checked by attacks when given.
        card: optional metadata (the model card saved with the weights).

    Calls in eval mode on CPU run a convolutional ``module`` on chunks of :data:`CPU_FORWARD_CHUNK` examples (the
    same logits and gradients, up to float rounding, at up to half the cost); ``module`` must therefore treat
    examples independently in eval mode, as classifiers do.

    Examples:
        >>> clf = Classifier(net, mean=[0.1307], std=[0.3081], num_classes=10, input_shape=(1, 28, 28))
        >>> with clf.attack_mode():
        ...     logits = clf(x)
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        module: nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        num_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        card: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        if isinstance(module, Classifier):
            raise TypeError("module: already a Classifier; pass it directly instead of wrapping it twice")
        self.module = module
        self.chunked = any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())
        """Whether eval-mode CPU forwards run in chunks of :data:`CPU_FORWARD_CHUNK` (networks with convolutions)."""
        self.bounds = validation.check_bounds("bounds", bounds)
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.card: dict[str, Any] = dict(card or {})
        if (mean is None) != (std is None):
            raise ValueError("mean/std: give both or neither")
        self.has_normalization = mean is not None
        if mean is not None and std is not None:
            mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
            std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
            if mean_t.shape != std_t.shape:
                raise ValueError(f"mean/std: expected the same length, got {mean_t.numel()} and {std_t.numel()}")
            if bool((std_t <= 0).any()):
                raise ValueError(f"std: expected positive values, got {std_t.tolist()}")
            self.register_buffer("mean", mean_t, persistent=False)
            self.register_buffer("std", std_t, persistent=False)
        else:
            self.register_buffer("mean", torch.zeros(0), persistent=False)
            self.register_buffer("std", torch.zeros(0), persistent=False)

    # ------------------------------------------------------------------ forward
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the per-channel normalisation (identity when none was given)."""
        if not self.has_normalization:
            return x
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalize(x)
        if self.chunked and z.shape[0] > CPU_FORWARD_CHUNK and z.device.type == "cpu" and not self.training:
            return torch.cat([self.module(c) for c in z.split(CPU_FORWARD_CHUNK)])
        return self.module(z)

    def predict(self, x: torch.Tensor, batch_size: int = PREDICT_BATCH) -> torch.Tensor:
        """Predicted labels for ``x``, batched, without gradients (see :func:`predict`)."""
        return predict(self, x, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return device_of(self.module)

    # ------------------------------------------------------------------ attack mode
    @contextlib.contextmanager
    def attack_mode(self, *, warn_train_mode: bool = True) -> Iterator[Classifier]:
        """Eval mode and parameter gradients off for the duration; previous state restored afterwards.

        Warns when the module was in train mode (batch norm and dropout behave differently in train mode,
        which users rarely mean when they attack); trainers crafting examples mid-training pass
        ``warn_train_mode=False``.
        """
        modes = {m: m.training for m in self.modules()}
        grads = {p: p.requires_grad for p in self.parameters()}
        if self.module.training and warn_train_mode:
            validation.warn(
                "model is in train mode; attacking it in eval mode (dropout off, batch-norm running "
                "statistics). Call model.eval() first to silence this warning.",
            )
        try:
            self.eval()
            for p in grads:
                p.requires_grad_(False)
            yield self
        finally:
            for m, mode in modes.items():
                m.training = mode
            for p, flag in grads.items():
                p.requires_grad_(flag)

    def extra_repr(self) -> str:
        norm = f"mean={self.mean.tolist()}, std={self.std.tolist()}, " if self.has_normalization else ""
        return f"{norm}bounds={self.bounds}, num_classes={self.num_classes}, input_shape={self.input_shape}"


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = PREDICT_BATCH, logits: bool = False
) -> torch.Tensor:
    """The model's predicted labels (or its logits) on ``x``, in batches, without gradients.

    Each batch is moved to the model's device; the result is on the device of ``x``. The model's mode is left as
    it is (call it inside :meth:`Classifier.attack_mode` or after ``model.eval()``).

    Examples:
        >>> labels = predict(model, x_test, batch_size=1000)
        >>> accuracy = (labels == y_test).float().mean()
    """
    device = device_of(model)
    out = []
    for start in range(0, x.shape[0], batch_size):
        z = model(x[start : start + batch_size].to(device))
        out.append((z if logits else z.argmax(1)).to(x.device))
    if not out:
        return torch.empty((0,), dtype=torch.int64, device=x.device)
    return torch.cat(out)


def device_of(model: nn.Module) -> torch.device:
    """The device of the first parameter (or buffer) of ``model``; the CPU for a module with neither."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def as_classifier(model: nn.Module | Classifier, bounds: tuple[float, float] | None = None) -> Classifier:
    """Return ``model`` if it is a :class:`Classifier`, otherwise wrap it (no normalisation) with ``bounds``.

    ``bounds=None`` gives a plain module the box ``(0, 1)`` (:data:`advlab.threat.DEFAULT_BOUNDS`).
    """
    if isinstance(model, Classifier):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model: expected a torch.nn.Module or advlab.Classifier, got {type(model).__name__}. "
            "For scikit-learn estimators or remote models use the oracles in advlab.blackbox."
        )
    return Classifier(model, bounds=bounds or (0.0, 1.0))


def check_suspicious_outputs(logits: torch.Tensor) -> None:
    """Warn when the outputs look like probabilities rather than logits (rows summing to one)."""
    if logits.shape[1] < 2:
        return
    with torch.no_grad():
        sums = logits.detach().sum(1)
        nonneg = bool((logits.detach() >= 0).all())
        if nonneg and torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            validation.warn(
                "model outputs are non-negative and sum to one: they look like probabilities. Attacks and "
                "losses expect logits; remove the final softmax (cross-entropy on probabilities gives "
                "vanishing gradients and a falsely robust model).",
            )
