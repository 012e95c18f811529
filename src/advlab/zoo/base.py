"""The architecture registry ``ARCHS`` (name -> :class:`ArchSpec`), :func:`create` and the input-shape helpers.

Every architecture is a plain ``torch.nn.Module`` that maps a batch of (normalised) inputs to logits; its
constructor takes ``input_shape`` and ``num_classes`` plus its own keyword arguments. Normalisation and the
input box live in :class:`advlab.Classifier`, never in the network.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlab import validation
from advlab.registry import Registry

MAX_SPATIAL = 4096
"""Largest image side searched when reporting the smallest input an architecture accepts."""


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture, and where it comes from.

    Attributes:
        name: registry name (``"wong-cnn"``).
        constructor: ``constructor(input_shape, num_classes, **kwargs) -> nn.Module``.
        default_kwargs: the paper's settings, used for every keyword the caller does not give.
        dataset: the dataset the paper used it on (default for the CLI).
        datasets: datasets the architecture makes sense for.
        paper: citation with arXiv id and section.
        summary: one line for listings.
    """

    name: str
    constructor: Callable[..., nn.Module]
    default_kwargs: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"
    datasets: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")
    paper: str = ""
    summary: str = ""

    def kwarg_names(self) -> list[str]:
        """The architecture's own keyword arguments (everything but ``input_shape`` and ``num_classes``)."""
        params = inspect.signature(self.constructor).parameters
        return [n for n in params if n not in ("self", "input_shape", "num_classes")]


ARCHS: Registry[ArchSpec] = Registry("arch")
"""All architectures, by name. ``ARCHS.get(name)`` gives the :class:`ArchSpec`."""


def register(spec: ArchSpec) -> ArchSpec:
    """Add ``spec`` to :data:`ARCHS` under ``spec.name``."""
    return ARCHS.register(spec.name)(spec)


def list_archs() -> list[str]:
    """Names of all registered architectures, sorted.

    Examples:
        >>> "wong-cnn" in list_archs()
        True
    """
    return ARCHS.names()


# ---------------------------------------------------------------------- shapes
def check_shape(input_shape: Any, *, name: str = "input_shape") -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints, or raise naming the argument."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (Sequence, torch.Size)):
        raise TypeError(
            f"{name}: expected a tuple of ints such as (1, 28, 28) or (64,), got {type(input_shape).__name__} "
            f"{input_shape!r}"
        )
    dims = tuple(validation.check_int(f"{name}[{i}]", d, minimum=1) for i, d in enumerate(input_shape))
    if not dims:
        raise ValueError(f"{name}: expected at least one dimension, got (). Use (D,) for flat features.")
    return dims


def image_shape(arch: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)``, or a ``ValueError`` saying that ``arch`` needs images."""
    if len(input_shape) != 3:
        hint = ""
        if len(input_shape) == 1 and math.isqrt(input_shape[0]) ** 2 == input_shape[0]:
            side = math.isqrt(input_shape[0])
            hint = (
                f" For square grey images use input_shape=(1, {side}, {side}) and reshape x to (N, 1, {side}, {side})."
            )
        raise ValueError(
            f"input_shape: {arch} is a convolutional network and needs images (C, H, W), got {input_shape}.{hint}"
        )
    return input_shape[0], input_shape[1], input_shape[2]


def flat_size(input_shape: tuple[int, ...]) -> int:
    """Number of input features once flattened."""
    return math.prod(input_shape)


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a convolution or pooling layer (PyTorch's floor rule); ``<= 0`` means the input is too small."""
    return (size + 2 * padding - kernel) // stride + 1 if size + 2 * padding >= kernel else 0


def check_spatial(
    arch: str, input_shape: tuple[int, int, int], out_side: Callable[[int], int], *, minimum: int = 1
) -> tuple[int, int]:
    """Final feature-map size ``(h, w)`` of a CNN; ``ValueError`` naming the smallest accepted input when too small.

    Args:
        arch: architecture name for the message.
        input_shape: ``(C, H, W)``.
        out_side: maps an input side to the side of the last feature map (monotone in the input side).
        minimum: smallest acceptable side of the last feature map.
    """
    _, h, w = input_shape
    out_h, out_w = out_side(h), out_side(w)
    if out_h < minimum or out_w < minimum:
        smallest = next((s for s in range(1, MAX_SPATIAL + 1) if out_side(s) >= minimum), None)
        need = f"at least {smallest}x{smallest} pixels" if smallest else "larger images"
        raise ValueError(
            f"input_shape: {arch} needs images of {need}, got {h}x{w} ({input_shape}). Resize the data or pick "
            "another architecture: wong-cnn and madry-cnn take 4x4 and larger, the fully connected ones "
            "(softmax-regression, mlp, maxout, rbf) any shape."
        )
    return out_h, out_w


# ---------------------------------------------------------------------- building
def _jsonable(value: Any) -> Any:
    """Tuples become lists (as they come back from JSON), recursively."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def resolve_kwargs(name: str, arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The full keyword arguments of architecture ``name``: its defaults updated with ``arch_kwargs``.

    Raises:
        ValueError: unknown architecture or a keyword the architecture does not take.
    """
    spec = ARCHS.get(name)
    allowed = spec.kwarg_names()
    unknown = sorted(set(arch_kwargs) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise ValueError(
            f"arch_kwargs: {spec.name} does not take {', '.join(map(repr, unknown))}; it accepts: {accepted}"
        )
    return _jsonable({**spec.default_kwargs, **arch_kwargs})


def create(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    seed: int | None = 0,
    **arch_kwargs: Any,
) -> nn.Module:
    """Build architecture ``name`` for inputs of ``input_shape`` and ``num_classes`` outputs.

    The initial weights are drawn from a private generator seeded with ``seed``, so the same call always gives
    the same network and the global random state is left untouched.

    Args:
        name: a registered architecture (see :func:`list_archs`), e.g. ``"wong-cnn"``.
        input_shape: per-example shape, ``(C, H, W)`` for images or ``(D,)`` for flat features.
        num_classes: number of output logits (``>= 2``).
        seed: seed of the weight initialisation; ``None`` draws from (and advances) the global torch RNG as
            plain PyTorch would.
        **arch_kwargs: the architecture's own settings (``hidden=(512,)`` for ``mlp``, ...); the paper's
            values are used for the others.

    Returns:
        A ``torch.nn.Module`` in train mode mapping ``(N, *input_shape)`` to logits ``(N, num_classes)``.

    Raises:
        ValueError: unknown name (with suggestions), unknown keyword, or an input shape the architecture
            cannot take.
        TypeError: arguments of the wrong type.

    Examples:
        >>> net = create("wong-cnn", input_shape=(1, 28, 28), num_classes=10)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    spec = ARCHS.get(name)
    input_shape = check_shape(input_shape)
    num_classes = validation.check_int("num_classes", num_classes, minimum=2)
    kwargs = resolve_kwargs(spec.name, arch_kwargs)
    if seed is None:
        return spec.constructor(input_shape, num_classes, **kwargs)
    seed = validation.check_int("seed", seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.constructor(input_shape, num_classes, **kwargs)


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of ``module``; buffers are not counted."""
    return sum(p.numel() for p in module.parameters())
