"""Fully connected networks: the ReLU multi-layer perceptron and the maxout network of Goodfellow et al. (2013)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from advlab import validation
from advlab.zoo.base import ArchSpec, check_shape, flat_size, register


def check_sizes(name: str, sizes: Sequence[int], *, allow_empty: bool) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"{name}: expected a sequence of layer sizes such as (256, 256), got {type(sizes).__name__}")
    out = [validation.check_int(f"{name}[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
    if not out and not allow_empty:
        raise ValueError(f"{name}: expected at least one layer, got an empty sequence")
    return out


class MLP(nn.Sequential):
    """Multi-layer perceptron: ``Flatten -> [Linear -> ReLU] * len(hidden) -> Linear``.

    Args:
        input_shape: per-example shape; any rank, flattened.
        num_classes: number of classes.
        hidden: widths of the hidden layers; ``()`` gives softmax regression.

    References:
        The fully connected MNIST networks (e.g. FC100-100-10) attacked in Szegedy et al., "Intriguing
        properties of neural networks", ICLR 2014, arXiv:1312.6199, §4 (here with ReLU units, Nair & Hinton,
        ICML 2010).

    Examples:
        >>> net = MLP((1, 28, 28), 10, hidden=(256, 256))
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (256, 256)) -> None:
        input_shape = check_shape(input_shape)
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        sizes = [flat_size(input_shape), *check_sizes("hidden", hidden, allow_empty=True)]
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in itertools.pairwise(sizes):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        super().__init__(*layers)


class MaxoutLinear(nn.Module):
    """A maxout layer: ``h_j = max_k (W_jk · x + b_jk)`` over ``pieces`` affine pieces per unit.

    The pieces of unit ``j`` are rows ``j*pieces ... (j+1)*pieces - 1`` of ``self.linear.weight``.

    Args:
        in_features: input width.
        units: number of maxout units (output width).
        pieces: affine pieces per unit (``k`` in the paper).

    References:
        Goodfellow, Warde-Farley, Mirza, Courville & Bengio, "Maxout Networks", ICML 2013, arXiv:1302.4389, §2.
    """

    def __init__(self, in_features: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units = units
        self.pieces = pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z.view(*z.shape[:-1], self.units, self.pieces).amax(-1)

    def extra_repr(self) -> str:
        return f"units={self.units}, pieces={self.pieces}"


class Maxout(nn.Sequential):
    """Maxout network: ``Flatten -> Dropout -> [Maxout -> Dropout] * len(units) -> Linear``.

    The defaults are the permutation-invariant MNIST model of Goodfellow et al. (2013), §5.1: two maxout layers
    of 240 units with 5 pieces each and a softmax layer, trained with dropout (inclusion probability 0.8 on the
    inputs and 0.5 on hidden units, i.e. ``input_dropout=0.2, dropout=0.5``). It is the network that Goodfellow,
    Shlens & Szegedy (2014) fool with FGSM at eps = 0.25 (89.4% error) and then adversarially train (§5-6).
    The paper's max-norm constraint on weight columns is a training setting and is left to the trainer.

    Args:
        input_shape: per-example shape; any rank, flattened.
        num_classes: number of classes.
        units: units of each maxout layer.
        pieces: affine pieces per maxout unit (``k``).
        dropout: drop probability on the input of each layer after the first (0 disables).
        input_dropout: drop probability on the network input (0 disables).

    References:
        Goodfellow, Warde-Farley, Mirza, Courville & Bengio, "Maxout Networks", ICML 2013, arXiv:1302.4389,
        §5.1; Goodfellow, Shlens & Szegedy, arXiv:1412.6572, §6.

    Examples:
        >>> net = Maxout((1, 28, 28), 10)              # 2 x 240 units x 5 pieces
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        units: Sequence[int] = (240, 240),
        pieces: int = 5,
        dropout: float = 0.5,
        input_dropout: float = 0.2,
    ) -> None:
        input_shape = check_shape(input_shape)
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        widths = check_sizes("units", units, allow_empty=False)
        pieces = validation.check_int("pieces", pieces, minimum=1)
        dropout = validation.check_float("dropout", dropout, minimum=0.0, maximum=1.0, strict_max=True)
        input_dropout = validation.check_float(
            "input_dropout", input_dropout, minimum=0.0, maximum=1.0, strict_max=True
        )
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(input_dropout)]
        d_in = flat_size(input_shape)
        for width in widths:
            layers += [MaxoutLinear(d_in, width, pieces), nn.Dropout(dropout)]
            d_in = width
        layers.append(nn.Linear(d_in, num_classes))
        super().__init__(*layers)


register(
    ArchSpec(
        name="mlp",
        constructor=MLP,
        default_kwargs={"hidden": (256, 256)},
        dataset="mnist",
        paper="Szegedy et al. 2013, arXiv:1312.6199, §4 (fully connected MNIST networks), with ReLU",
        summary="ReLU multi-layer perceptron, hidden sizes configurable",
    )
)
register(
    ArchSpec(
        name="maxout",
        constructor=Maxout,
        default_kwargs={"units": (240, 240), "pieces": 5, "dropout": 0.5, "input_dropout": 0.2},
        dataset="mnist",
        paper="Goodfellow et al. 2013, arXiv:1302.4389, §5.1 (permutation-invariant MNIST)",
        summary="maxout network, 2 x 240 units x 5 pieces with dropout",
    )
)
