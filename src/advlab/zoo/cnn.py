"""Small convolutional networks from the robustness literature: Wong et al. (2020), Madry et al. (2018), Carlini & Wagner (2017)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advlab import validation
from advlab.zoo.base import ArchSpec, check_shape, check_spatial, conv_out, image_shape, register
from advlab.zoo.mlp import check_sizes


def _wong_side(s: int) -> int:
    return conv_out(conv_out(s, 4, 2, 1), 4, 2, 1)


class WongCNN(nn.Sequential):
    """The MNIST CNN of Wong, Rice & Kolter (2020) ("Fast is better than free").

    ``Conv(C, 16, 4, stride 2, pad 1) - ReLU - Conv(16, 32, 4, stride 2, pad 1) - ReLU - Flatten -
    Linear(32 * H/4 * W/4, 100) - ReLU - Linear(100, num_classes)``; on MNIST 166,406 parameters. The same
    network is the "small" model of Wong & Kolter (2018) for provable defenses.

    Args:
        input_shape: ``(C, H, W)``; H and W of at least 4.
        num_classes: number of classes.

    Raises:
        ValueError: ``input_shape`` is not an image or too small.

    References:
        Wong, Rice & Kolter, "Fast is better than free: revisiting adversarial training", ICLR 2020,
        arXiv:2001.03994 (MNIST experiments; layer sizes as in the authors' released code); Wong & Kolter,
        "Provable defenses against adversarial examples via the convex outer adversarial polytope", ICML 2018,
        arXiv:1711.00851.

    Examples:
        >>> net = WongCNN((1, 28, 28), 10)
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        shape = image_shape("wong-cnn", check_shape(input_shape))
        c = shape[0]
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        h, w = check_spatial("wong-cnn", shape, _wong_side)
        super().__init__(
            nn.Conv2d(c, 16, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * h * w, 100),
            nn.ReLU(),
            nn.Linear(100, num_classes),
        )


def _madry_side(s: int) -> int:
    return conv_out(conv_out(conv_out(conv_out(s, 5, 1, 2), 2, 2), 5, 1, 2), 2, 2)


class MadryCNN(nn.Sequential):
    """The MNIST CNN of Madry et al. (2018), used for PGD adversarial training.

    ``Conv(C, 32, 5, pad 2) - ReLU - MaxPool 2 - Conv(32, 64, 5, pad 2) - ReLU - MaxPool 2 - Flatten -
    Linear(64 * H/4 * W/4, 1024) - ReLU - Linear(1024, num_classes)``; on MNIST 3,274,634 parameters. (Their
    CIFAR-10 model is a wide ResNet; this CNN on CIFAR shapes is the same layers with 3 input channels.)

    Args:
        input_shape: ``(C, H, W)``; H and W of at least 4.
        num_classes: number of classes.

    Raises:
        ValueError: ``input_shape`` is not an image or too small.

    References:
        Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018, arXiv:1706.06083, §5 (MNIST: two conv layers of 32 and 64 filters, each
        followed by 2x2 max-pooling, and a fully connected layer of 1024 units).

    Examples:
        >>> net = MadryCNN((1, 28, 28), 10)
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        shape = image_shape("madry-cnn", check_shape(input_shape))
        c = shape[0]
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        h, w = check_spatial("madry-cnn", shape, _madry_side)
        super().__init__(
            nn.Conv2d(c, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * h * w, 1024),
            nn.ReLU(),
            nn.Linear(1024, num_classes),
        )


def _cw_side(s: int) -> int:
    for _ in range(2):  # two blocks of [conv 3x3 valid, conv 3x3 valid, max-pool 2]
        s = conv_out(conv_out(conv_out(s, 3), 3), 2, 2)
    return s


class CifarCNN(nn.Sequential):
    """The small CIFAR-10 CNN of Papernot et al. (2016) and Carlini & Wagner (2017).

    ``[Conv 3x3 (64) - ReLU - Conv 3x3 (64) - ReLU - MaxPool 2] - [Conv 3x3 (128) - ReLU - Conv 3x3 (128) -
    ReLU - MaxPool 2] - Flatten - Linear(256) - ReLU - Dropout(0.5) - Linear(256) - ReLU - Linear(num_classes)``
    with unpadded ("valid") convolutions, as in Table 1 of Carlini & Wagner and their reference code; on
    CIFAR-10 1,147,978 parameters. ``channels=(32, 32, 64, 64), hidden=(200, 200)`` gives their MNIST model.

    Args:
        input_shape: ``(C, H, W)``; H and W of at least 16.
        num_classes: number of classes.
        channels: output channels of the four convolutions.
        hidden: widths of the two fully connected hidden layers.
        dropout: drop probability after the first fully connected layer (0.5 in the paper's training setup).

    Raises:
        ValueError: ``input_shape`` is not an image or smaller than 16x16 (e.g. the 8x8 digits).

    References:
        Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
        arXiv:1608.04644, §4 Table 1 (architecture) and Table 2 (training); the same architecture as
        Papernot et al., "Distillation as a Defense to Adversarial Perturbations", arXiv:1511.04508, Table 1.

    Examples:
        >>> net = CifarCNN((3, 32, 32), 10)
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        channels: Sequence[int] = (64, 64, 128, 128),
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.5,
    ) -> None:
        shape = image_shape("cifar-cnn", check_shape(input_shape))
        c = shape[0]
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        ch = check_sizes("channels", channels, allow_empty=False)
        fc = check_sizes("hidden", hidden, allow_empty=False)
        if len(ch) != 4 or len(fc) != 2:
            raise ValueError(
                f"channels/hidden: cifar-cnn has 4 convolutions and 2 hidden layers, got channels={tuple(ch)}, "
                f"hidden={tuple(fc)}. Example: channels=(64, 64, 128, 128), hidden=(256, 256)."
            )
        dropout = validation.check_float("dropout", dropout, minimum=0.0, maximum=1.0, strict_max=True)
        h, w = check_spatial("cifar-cnn", shape, _cw_side)
        super().__init__(
            nn.Conv2d(c, ch[0], 3),
            nn.ReLU(),
            nn.Conv2d(ch[0], ch[1], 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(ch[1], ch[2], 3),
            nn.ReLU(),
            nn.Conv2d(ch[2], ch[3], 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(ch[3] * h * w, fc[0]),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(fc[0], fc[1]),
            nn.ReLU(),
            nn.Linear(fc[1], num_classes),
        )


register(
    ArchSpec(
        name="wong-cnn",
        constructor=WongCNN,
        dataset="mnist",
        datasets=("digits", "mnist", "fashion-mnist"),
        paper="Wong, Rice & Kolter 2020, arXiv:2001.03994 (MNIST model)",
        summary="2 strided convs + 2 FC (MNIST model of fast adversarial training)",
    )
)
register(
    ArchSpec(
        name="madry-cnn",
        constructor=MadryCNN,
        dataset="mnist",
        datasets=("digits", "mnist", "fashion-mnist", "cifar10"),
        paper="Madry et al. 2018, arXiv:1706.06083 (MNIST model)",
        summary="2 convs 5x5 + max-pool + FC 1024 (MNIST model of PGD training)",
    )
)
register(
    ArchSpec(
        name="cifar-cnn",
        constructor=CifarCNN,
        default_kwargs={"channels": (64, 64, 128, 128), "hidden": (256, 256), "dropout": 0.5},
        dataset="cifar10",
        datasets=("mnist", "fashion-mnist", "cifar10"),
        paper="Carlini & Wagner 2017, arXiv:1608.04644, Table 1 (= Papernot et al. 2016, arXiv:1511.04508)",
        summary="4 convs 3x3 + 2 FC 256 (C&W / distillation CIFAR model)",
    )
)
