"""Random crops with padding and horizontal flips: the CIFAR-10 training augmentation, differentiable in the images.

:func:`random_crop_flip` pads each image with ``padding`` zeros on every side, cuts a random ``H x W`` window out of
it (a translation by up to ``padding`` pixels each way, the vacated border black) and mirrors it left-right with
probability 1/2, all in one ``torch.gather``: the result is differentiable with respect to the images, so the same
function augments a victim's training batches (:class:`~advlab.poisoning.training.Training` with ``augment=True``)
and the poisons inside Witches' Brew's alignment loss (Geiping et al. 2021's differentiable data augmentation,
:mod:`advlab.poisoning.gradient_matching`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

PADDING = 4
"""The CIFAR-10 standard: random 32x32 crops of the image padded by 4 pixels."""


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator, *, padding: int = PADDING, flip: bool = True
) -> torch.Tensor:
    """Each image of ``x`` translated by a random ``(dy, dx)`` in ``[-padding, padding]`` and maybe flipped.

    Args:
        x: images ``(N, C, H, W)``.
        generator: draws the offsets and the flips (on its own device; they are moved to ``x``'s).
        padding: the largest translation in pixels (zero fill); 0 for none.
        flip: mirror each image left-right with probability 1/2.

    Returns:
        The augmented images, of ``x``'s shape, dtype and device; differentiable with respect to ``x``.
        ``padding=0, flip=False`` returns ``x`` itself.

    Raises:
        ValueError: ``x`` is not a batch of images or ``padding`` is negative.

    Examples:
        >>> out = random_crop_flip(torch.rand(8, 3, 32, 32), torch.Generator().manual_seed(0))
        >>> out.shape
        torch.Size([8, 3, 32, 32])
    """
    if x.dim() != 4:
        raise ValueError(f"x: expected images (N, C, H, W), got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding: expected a number of pixels >= 0, got {padding}")
    if padding == 0 and not flip:
        return x
    n, c, h, w = x.shape
    draws = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=generator.device).to(x.device)
    flips = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(x.device) & flip
    rows = torch.arange(h, device=x.device)[None, :] + draws[0][:, None]  # (N, H) rows of the padded image
    cols = torch.arange(w, device=x.device)[None, :] + draws[1][:, None]  # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    padded = F.pad(x, (padding, padding, padding, padding))
    picked = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return picked.gather(3, cols[:, None, None, :].expand(n, c, h, w))
