"""The pre-activation ResNet-18 for CIFAR-10 (He et al. 2016) as used in adversarial training by Wong et al. and Rice et al."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advlab import validation
from advlab.zoo.base import ArchSpec, check_shape, check_spatial, conv_out, image_shape, register

MIN_FINAL_SIDE = 2
"""Smallest side of the last stage's feature map: below it the 3x3 convolutions of stage 4 see mostly padding."""


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``x + conv(relu(bn(conv(relu(bn(x))))))``.

    When the block changes resolution or width, the shortcut is a 1x1 strided convolution applied to
    ``relu(bn1(x))`` (the pre-activated input), as in the paper's full pre-activation unit (Fig. 4e).

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first convolution (2 at the start of stages 2-4).

    References:
        He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016, arXiv:1603.05027, §4.1.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


def _resnet_side(s: int) -> int:
    for _ in range(3):  # stages 2-4 halve the resolution with a stride-2 3x3 convolution (padding 1)
        s = conv_out(s, 3, 2, 1)
    return s


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18, CIFAR variant (3x3 stem, no max-pool), as in Wong et al. / Rice et al.

    ``Conv 3x3 (64) - 4 stages of 2 pre-activation blocks (64, 128, 256, 512 channels; stride 1, 2, 2, 2) -
    BN - ReLU - global average pool - Linear(512, num_classes)``. On CIFAR-10 the last feature map is 4x4 and the
    global average pool equals the ``avg_pool2d(out, 4)`` of the reference code; 11,172,170 parameters (the
    final BN is the one added by the adversarial-training code of Wong et al. and Rice et al.).

    Args:
        input_shape: ``(C, H, W)``; H and W of at least 9 (MNIST works; the 8x8 digits leave a 1x1 last stage).
        num_classes: number of classes.

    Raises:
        ValueError: ``input_shape`` is not an image or smaller than 9x9.

    References:
        He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016, arXiv:1603.05027;
        Wong, Rice & Kolter, arXiv:2001.03994 (CIFAR-10 experiments); Rice, Wong & Kolter, "Overfitting in
        adversarially robust deep learning", ICML 2020, arXiv:2002.11569.

    Examples:
        >>> net = PreActResNet18((3, 32, 32), 10)
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        shape = image_shape("preact-resnet18", check_shape(input_shape))
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        check_spatial("preact-resnet18", shape, _resnet_side, minimum=MIN_FINAL_SIDE)
        self.conv1 = nn.Conv2d(shape[0], 64, 3, stride=1, padding=1, bias=False)
        in_planes = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


register(
    ArchSpec(
        name="preact-resnet18",
        constructor=PreActResNet18,
        dataset="cifar10",
        datasets=("mnist", "fashion-mnist", "cifar10"),
        paper="He et al. 2016, arXiv:1603.05027; CIFAR variant of Wong et al. 2020, arXiv:2001.03994",
        summary="pre-activation ResNet-18 (CIFAR variant, 11.2M parameters)",
    )
)
