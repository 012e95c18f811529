"""Adversarial patch (Brown et al. 2017): a universal, location-independent patch that makes a model predict one class.

:func:`apply_patch` pastes a patch into images at given locations, scales and angles (differentiable; the warp
is :func:`~advlab.physical.transforms.affine`, the geometry of the image transformations); :func:`train_patch`
learns the patch over a data set with random placements (expectation over transformation, as in the paper);
:func:`patch_success_rate` measures it on held-out images.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab import validation
from advlab.attacks.base import make_generator
from advlab.models import Classifier, as_classifier
from advlab.physical.transforms import affine, compose_affine, rotation_matrix, scaling_matrix, translation_matrix

log = logging.getLogger(__name__)

SHAPES = ("square", "circle")
"""Patch shapes: the full rectangle, or the inscribed disc (Brown et al. use a round sticker)."""


def _pair(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or a pair (height, width), got {value!r}")
        return validation.check_int(f"{name}[0]", value[0], minimum=1), validation.check_int(
            f"{name}[1]", value[1], minimum=1
        )
    v = validation.check_int(name, value, minimum=1)
    return v, v


def _hw(shape: Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` from the last two sizes."""
    return int(shape[-2]), int(shape[-1])


def patch_mask(size: tuple[int, int], shape: str = "square") -> torch.Tensor:
    """The patch's support, ``(1, h, w)`` of 0/1: all ones, or the inscribed disc for ``"circle"``."""
    validation.check_choice("shape", shape, SHAPES)
    h, w = size
    if shape == "square":
        return torch.ones(1, h, w)
    yy = torch.arange(h, dtype=torch.float64)[:, None] + 0.5 - h / 2
    xx = torch.arange(w, dtype=torch.float64)[None, :] + 0.5 - w / 2
    r = min(h, w) / 2
    return ((yy**2 + xx**2) <= r**2).to(torch.float32)[None]


def _extent(h: int, w: int, scale: torch.Tensor, angle_rad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Height and width of the bounding box of an ``h x w`` patch scaled and rotated."""
    c, s = angle_rad.cos().abs(), angle_rad.sin().abs()
    return scale * (s * w + c * h), scale * (c * w + s * h)


def apply_patch(
    x: torch.Tensor,
    patch: torch.Tensor,
    top_left: torch.Tensor,
    *,
    scale: torch.Tensor | float = 1.0,
    angle: torch.Tensor | float = 0.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paste ``patch`` into each image: scaled by ``scale[i]``, rotated by ``angle[i]`` degrees, its bounding box at ``top_left[i]``.

    The patch is resampled bilinearly into image coordinates together with its ``mask``, and the result is
    ``x * (1 - m) + p`` with ``m`` the resampled mask and ``p`` the resampled masked patch, a convex
    combination of image and patch values (so the box is preserved). With ``scale = 1``, ``angle = 0`` and
    whole-pixel ``top_left`` the patch pixels land exactly on image pixels.

    Args:
        x: images ``(N, C, H, W)``.
        patch: ``(C, h, w)``.
        top_left: ``(N, 2)`` pixel coordinates ``(row, column)`` of the transformed patch's bounding box.
        scale: per-example (or one) scale factor.
        angle: per-example (or one) counter-clockwise rotation in degrees.
        mask: ``(1, h, w)`` support of the patch (default all ones).

    Returns:
        The patched images, same shape as ``x``.
    """
    n, c, hh, ww = x.shape
    _, h, w = patch.shape
    dev = x.device
    s = torch.as_tensor(scale, dtype=torch.float64).expand(n).to(dev)
    degrees = torch.as_tensor(angle, dtype=torch.float64).expand(n).to(dev)
    bh, bw = _extent(h, w, s, torch.deg2rad(degrees))
    tl = torch.as_tensor(top_left, dtype=torch.float64).to(dev)
    # the patch centre (x, y) relative to the image centre; image pixels are mapped back into the patch:
    # shifted to the patch centre, turned back, scaled back (output-to-input maps, as for every warp)
    centre = torch.stack([tl[:, 1] + bw / 2 - ww / 2, tl[:, 0] + bh / 2 - hh / 2], 1)
    to_patch = compose_affine(
        scaling_matrix(s, n), compose_affine(rotation_matrix(degrees, n), translation_matrix(-centre))
    )
    m = mask if mask is not None else torch.ones(1, h, w, dtype=x.dtype)
    m = m.to(dev, x.dtype)
    src = torch.cat([patch.to(dev, x.dtype) * m, m], 0)[None].expand(n, c + 1, h, w)
    warped = affine(src, to_patch, size=(hh, ww), padding="zeros")
    p, mm = warped[:, :c], warped[:, c:]
    return x * (1 - mm) + p


@dataclass
class Placements:
    """Random placements of a patch: per example ``top_left`` (N, 2), ``scale`` (N,), ``angle`` (N,) in degrees."""

    top_left: torch.Tensor
    scale: torch.Tensor
    angle: torch.Tensor


def _margin(scale: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Extra room (pixels, both sides together) that bilinear resampling needs around a scaled or rotated patch.

    The interpolation kernel reaches half a patch pixel, ``scale / 2`` image pixels, beyond the patch's
    edge; an unscaled, unrotated patch at whole-pixel positions needs none (its pixels land exactly).
    """
    exact = (scale == 1) & (angle == 0)
    return torch.where(exact, torch.zeros_like(scale), scale)


def _check_fits(
    image_hw: tuple[int, int], size: tuple[int, int], scale: tuple[float, float], rotation: tuple[float, float]
) -> None:
    h, w = size
    worst_h = worst_w = 0.0
    angles = [rotation[0], rotation[1]] + [
        d for d in (-90.0, -45.0, 0.0, 45.0, 90.0) if rotation[0] <= d <= rotation[1]
    ]
    for deg in angles:
        s = torch.tensor(scale[1], dtype=torch.float64)
        a = torch.tensor(math.radians(deg), dtype=torch.float64)
        bh, bw = _extent(h, w, s, a)
        m = float(_margin(s, a)) if (scale != (1.0, 1.0) or rotation != (0.0, 0.0)) else 0.0
        worst_h, worst_w = max(worst_h, float(bh) + m), max(worst_w, float(bw) + m)
    if worst_h > image_hw[0] + 1e-9 or worst_w > image_hw[1] + 1e-9:
        raise ValueError(
            f"patch_size: a {h}x{w} patch (scale up to {scale[1]:g}, rotation {rotation[0]:g}..{rotation[1]:g} degrees) "
            f"needs up to {worst_h:.1f}x{worst_w:.1f} pixels (with the interpolation margin) but the images are {image_hw[0]}x{image_hw[1]}. "
            "Use a smaller patch_size or scale range."
        )


def sample_placements(
    n: int,
    image_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    rotation: tuple[float, float] = (0.0, 0.0),
) -> Placements:
    """Uniform random placements that keep the whole (scaled, rotated) patch inside the image.

    Scale and angle are uniform in their ranges; the bounding box's top-left corner is uniform over the
    whole-pixel positions where the box fits.
    """
    _check_fits(image_hw, patch_hw, scale, rotation)
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator, dtype=torch.float64)
    a = rotation[0] + (rotation[1] - rotation[0]) * torch.rand(n, generator=generator, dtype=torch.float64)
    bh, bw = _extent(patch_hw[0], patch_hw[1], s, torch.deg2rad(a))
    margin = _margin(s, a)
    room_h = torch.floor(image_hw[0] - bh - margin + 1e-9).clamp_min(0)
    room_w = torch.floor(image_hw[1] - bw - margin + 1e-9).clamp_min(0)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (room_h + 1)).clamp(max=room_h) + margin / 2
    left = torch.floor(u[:, 1] * (room_w + 1)).clamp(max=room_w) + margin / 2
    return Placements(torch.stack([top, left], 1), s, a)


@dataclass
class AdversarialPatch:
    """A trained patch and the settings it was trained for.

    Attributes:
        patch: ``(C, h, w)`` inside the bounds.
        mask: ``(1, h, w)`` support.
        target: the class the patch asks for.
        scale, rotation: the placement ranges used in training (and by :meth:`apply` by default).
        history: mean target probability per epoch on the training images.
        success_rate_train: fraction of training images (label != target) classified as the target with the patch.
        seconds: training wall time.
    """

    patch: torch.Tensor
    mask: torch.Tensor
    target: int
    scale: tuple[float, float] = (1.0, 1.0)
    rotation: tuple[float, float] = (0.0, 0.0)
    history: list[float] = field(default_factory=list)
    success_rate_train: float = float("nan")
    seconds: float = 0.0

    def apply(self, x: torch.Tensor, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """Paste the patch at random placements (from ``generator``) into ``x``."""
        g = make_generator(generator)
        pl = sample_placements(
            x.shape[0], _hw(x.shape[2:]), _hw(self.patch.shape[1:]), g, scale=self.scale, rotation=self.rotation
        )
        return apply_patch(x, self.patch, pl.top_left, scale=pl.scale, angle=pl.angle, mask=self.mask)


def _check_images(model: nn.Module, x: Any, name: str = "x") -> tuple[Any, torch.Tensor]:
    clf = as_classifier(model)
    x_t = torch.as_tensor(x)
    validation.check_input(x_t, clf.bounds, name=name)
    if x_t.dim() != 4:
        raise ValueError(f"{name}: patches need images (N, C, H, W), got shape {tuple(x_t.shape)}")
    return clf, x_t.to(clf.device)


@dataclass(frozen=True)
class PatchSettings:
    """The checked settings of :func:`train_patch` (see there); built with :meth:`check`."""

    size: tuple[int, int]
    shape: str
    scale: tuple[float, float]
    rotation: tuple[float, float]
    epochs: int
    batch_size: int
    lr: float

    @classmethod
    def check(
        cls,
        image_hw: tuple[int, int],
        *,
        patch_size: int | Sequence[int],
        shape: str,
        scale: float | Sequence[float],
        rotation: float | Sequence[float],
        epochs: int,
        batch_size: int,
        lr: float,
    ) -> PatchSettings:
        """Validate every setting (errors name the argument) and that the patch fits ``image_hw``."""
        size = _pair("patch_size", patch_size)
        validation.check_choice("shape", shape, SHAPES)
        scale_r = validation.check_strength_range("scale", scale, minimum=1e-3, maximum=4.0)
        if scale_r[0] <= 0:
            raise ValueError(f"scale: expected factors > 0, got {scale_r}")
        rot_r = validation.check_strength_range("rotation", rotation, minimum=-180.0, maximum=180.0)
        epochs = validation.check_int("epochs", epochs, minimum=1)
        batch_size = validation.check_int("batch_size", batch_size, minimum=1)
        lr = validation.check_float("lr", lr, minimum=0.0, strict_min=True)
        _check_fits(image_hw, size, scale_r, rot_r)
        return cls(size, shape, scale_r, rot_r, epochs, batch_size, lr)


def _other_classes(x: torch.Tensor, y: Any, target: int, num_classes: int | None) -> torch.Tensor:
    """The images whose label is not ``target``."""
    y_t = torch.as_tensor(y).long()
    validation.check_labels(y_t, x.shape[0], num_classes)
    keep = (y_t != target).nonzero().flatten().to(x.device)
    x = x[keep]
    if x.shape[0] == 0:
        raise ValueError("y: every image has the target label; give images of other classes")
    return x


class _PatchTraining:
    """The steps of :func:`train_patch`: a random patch, then epochs of Adam steps on random placements."""

    def __init__(
        self, clf: Classifier, x: torch.Tensor, target: int, settings: PatchSettings, generator: torch.Generator
    ) -> None:
        self.clf, self.x, self.target, self.s, self.g = clf, x, target, settings, generator
        self.lo, self.hi = clf.bounds
        self.mask = patch_mask(settings.size, settings.shape).to(x.device, x.dtype)
        init = self.lo + (self.hi - self.lo) * torch.rand(
            (x.shape[1], *settings.size), generator=generator, dtype=torch.float64
        )
        self.patch = init.to(x.device, x.dtype).requires_grad_(True)
        self.opt = torch.optim.Adam([self.patch], lr=settings.lr)

    def run(self) -> AdversarialPatch:
        history: list[float] = []
        t0 = time.perf_counter()
        with self.clf.attack_mode(warn_train_mode=False):
            for epoch in range(self.s.epochs):
                history.append(self.epoch())
                log.info("patch epoch %d: mean target probability %.3f", epoch + 1, history[-1])
        result = AdversarialPatch(
            patch=self.patch.detach(),
            mask=self.mask,
            target=self.target,
            scale=self.s.scale,
            rotation=self.s.rotation,
            history=history,
            seconds=time.perf_counter() - t0,
        )
        result.success_rate_train = patch_success_rate(self.clf, self.x, result, generator=self.g)
        return result

    def epoch(self) -> float:
        """One pass over the images in a random order; the mean target probability seen during it."""
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self.g).to(self.x.device)
        total, count = 0.0, 0
        for start in range(0, n, self.s.batch_size):
            xb = self.x[order[start : start + self.s.batch_size]]
            total += self.step(xb)
            count += xb.shape[0]
        return total / count

    def step(self, xb: torch.Tensor) -> float:
        """One Adam step on ``-mean log p(target)`` over random placements, then back into the box."""
        s = self.s
        pl = sample_placements(xb.shape[0], _hw(xb.shape[2:]), s.size, self.g, scale=s.scale, rotation=s.rotation)
        xp = apply_patch(xb, self.patch, pl.top_left, scale=pl.scale, angle=pl.angle, mask=self.mask)
        logp = F.log_softmax(self.clf(xp), dim=1)[:, self.target]
        loss = -logp.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.patch.clamp_(self.lo, self.hi)
        return float(logp.detach().exp().sum())


def train_patch(
    model: nn.Module,
    x: Any,
    target: int,
    *,
    patch_size: int | Sequence[int] = 8,
    shape: str = "square",
    scale: float | Sequence[float] = 1.0,
    rotation: float | Sequence[float] = 0.0,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 0.05,
    y: Any = None,
    generator: torch.Generator | int | None = None,
) -> AdversarialPatch:
    """Learn a universal patch that makes ``model`` predict ``target`` wherever it is pasted (Brown et al. 2017).

    Maximises ``E_{x, placement}[log p(target | A(patch, x, placement))]`` over the images ``x`` and random
    placements (uniform location keeping the patch inside the image, scale and rotation uniform in their
    ranges), with Adam on the patch pixels, projected onto the box after every step. This is the paper's
    expectation-over-transformation objective (their eq. 1) without the optional disguise term.

    Args:
        model: the classifier.
        x: training images ``(N, C, H, W)`` in the model's bounds.
        target: the class the patch should cause.
        patch_size: side (int) or ``(height, width)`` of the patch in pixels.
        shape: ``"square"`` or ``"circle"``.
        scale: a factor or a range ``(low, high)`` in ``(0, 4]``.
        rotation: an angle or a range in degrees, within ``[-180, 180]``.
        epochs: passes over ``x``.
        batch_size: images per step.
        lr: Adam learning rate (in input units).
        y: optional labels; images of the target class are left out of training and of the success rate.
        generator: ``torch.Generator`` or seed (initial patch, data order, placements; default seed 0).

    Returns:
        An :class:`AdversarialPatch`.

    Raises:
        ValueError: a patch larger than the images, a target outside the model's classes, bad ranges.

    References:
        Brown, Mané, Roy, Abadi & Gilmer, "Adversarial Patch", arXiv:1712.09665.

    Examples:
        >>> p = train_patch(clf, x_train[:5000], target=3, patch_size=8, rotation=(-20, 20), epochs=3)
        >>> patch_success_rate(clf, x_test, p, y=y_test)
    """
    clf, x_t = _check_images(model, x)
    num_classes = clf.num_classes
    target = validation.check_int("target", target, minimum=0, maximum=(num_classes - 1) if num_classes else None)
    settings = PatchSettings.check(
        _hw(x_t.shape[2:]),
        patch_size=patch_size,
        shape=shape,
        scale=scale,
        rotation=rotation,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
    )
    if y is not None:
        x_t = _other_classes(x_t, y, target, num_classes)
    return _PatchTraining(clf, x_t, target, settings, make_generator(generator)).run()


@torch.no_grad()
def patch_success_rate(
    model: nn.Module,
    x: Any,
    patch: AdversarialPatch,
    *,
    y: Any = None,
    draws: int = 1,
    generator: torch.Generator | int | None = None,
    batch_size: int = 500,
) -> float:
    """Fraction of (image, random placement) pairs that ``model`` classifies as the patch's target.

    Images whose label ``y`` is the target are left out when labels are given. Each image gets ``draws``
    independent placements from the patch's scale and rotation ranges.

    Examples:
        >>> patch_success_rate(clf, x_test, patch, y=y_test, draws=5, generator=1)
    """
    clf, x_t = _check_images(model, x)
    draws = validation.check_int("draws", draws, minimum=1)
    if y is not None:
        y_t = torch.as_tensor(y).long()
        validation.check_labels(y_t, x_t.shape[0], clf.num_classes)
        x_t = x_t[(y_t != patch.target).nonzero().flatten().to(x_t.device)]
    g = make_generator(generator)
    hits, total = 0, 0
    with clf.attack_mode(warn_train_mode=False):
        for _ in range(draws):
            for start in range(0, x_t.shape[0], batch_size):
                xb = x_t[start : start + batch_size]
                pred = clf(patch.apply(xb, g)).argmax(1)
                hits += int((pred == patch.target).sum())
                total += xb.shape[0]
    return hits / total if total else float("nan")
