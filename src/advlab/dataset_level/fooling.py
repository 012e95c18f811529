"""Fooling images (Nguyen et al. 2015) by gradient ascent, and the rubbish-class rate of Gaussian noise (Goodfellow et al.).

:func:`fooling_images` optimises, for each class, an input that the model assigns to that class with very high
confidence, starting from noise or a blank image; it is the directly encoded *gradient-ascent* variant of
Nguyen et al. (their section 3.3 alternative), not their evolutionary (EA) or CPPN-encoded search.
:func:`rubbish_class_rate` measures how often plain Gaussian noise is classified as a real class with
confidence above a threshold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab import validation
from advlab.attacks.base import make_generator
from advlab.models import Classifier, as_classifier

log = logging.getLogger(__name__)

STARTS = ("noise", "blank", "gray")
"""Starting images: uniform noise in the box, the lower bound everywhere (black), or the box's middle (grey)."""
DEFAULT_CONFIDENCE = 0.99
"""Nguyen et al. report images classified with >= 99.6% confidence; 99% is the target used here."""


def _input_shape(clf: Classifier, input_shape: Any) -> tuple[int, ...]:
    shape = input_shape if input_shape is not None else clf.input_shape
    if shape is None:
        raise ValueError("input_shape: the model declares no input shape; pass input_shape=(C, H, W)")
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape: expected positive sizes, got {shape}")
    return shape


def _num_classes(clf: Classifier, shape: tuple[int, ...]) -> int:
    if clf.num_classes is not None:
        return int(clf.num_classes)
    with torch.no_grad():
        return int(clf(torch.full((1, *shape), clf.bounds[0], device=clf.device)).shape[1])


@dataclass
class FoolingImages:
    """Fooling images, one per requested class.

    Attributes:
        x: the images ``(K, ...)`` inside the box.
        classes: the class each image was optimised for ``(K,)``.
        confidence: the model's softmax probability of that class on the final image ``(K,)``.
        reached: whether the confidence target was reached ``(K,)``.
        steps: ascent steps taken (the step at which the target was reached, or all of them) ``(K,)``.
        start: the starting image kind.
        seconds: wall time.
    """

    x: torch.Tensor
    classes: torch.Tensor
    confidence: torch.Tensor
    reached: torch.Tensor
    steps: torch.Tensor
    start: str = "noise"
    target_confidence: float = DEFAULT_CONFIDENCE
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction_reached(self) -> float:
        return float(self.reached.float().mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "target_confidence": self.target_confidence,
            "seconds": self.seconds,
            "fraction_reached": self.fraction_reached,
            "classes": [
                {"class": int(c), "reached": bool(r), "confidence": float(p), "steps": int(s)}
                for c, r, p, s in zip(self.classes, self.reached, self.confidence, self.steps)
            ],
            **self.info,
        }


def fooling_images(
    model: nn.Module,
    *,
    classes: Any = None,
    input_shape: tuple[int, ...] | None = None,
    start: str = "noise",
    confidence: float = DEFAULT_CONFIDENCE,
    steps: int = 500,
    step_size: float = 0.01,
    l2: float = 0.0,
    generator: torch.Generator | int | None = None,
) -> FoolingImages:
    """Gradient ascent on each class's log-probability from noise or a blank image, until the model is confident.

    For every class ``c`` (one image per class, all optimised in one batch):
    ``x <- clip(x + step_size * sign(grad_x [log p_c(x) - l2 * |x - x_0|^2]))`` starting from ``x_0``, until
    ``p_c(x) >= confidence`` (that image is then frozen) or ``steps`` steps. The optional L2 term is a
    simple prior that keeps the image near its start (Nguyen et al. mention L2 regularisation for their
    gradient-ascent images; 0 turns it off).

    This is the "directly encoded", gradient-based way of producing fooling images (Nguyen et al. 2015,
    section 3.3 alternative to their evolutionary algorithm), not the evolutionary or CPPN search.

    Args:
        model: the classifier.
        classes: class indices to produce (default all).
        input_shape: per-example input shape; default the model's ``input_shape``.
        start: ``"noise"`` (uniform in the box), ``"blank"`` (the lower bound) or ``"gray"`` (the middle).
        confidence: softmax probability to reach (default 0.99).
        steps: maximum ascent steps.
        step_size: linf step per iteration, in input units.
        l2: weight of the L2 prior ``|x - x_0|^2``.
        generator: ``torch.Generator`` or seed for the noise start (default seed 0).

    Returns:
        :class:`FoolingImages`.

    Raises:
        ValueError: classes out of range, a confidence outside (0, 1), bad settings, no input shape.

    References:
        Nguyen, Yosinski & Clune, "Deep Neural Networks are Easily Fooled: High Confidence Predictions for
        Unrecognizable Images", arXiv:1412.1897.

    Examples:
        >>> fool = fooling_images(clf, start="noise", confidence=0.99)
        >>> fool.fraction_reached, fool.confidence
    """
    clf = as_classifier(model)
    shape = _input_shape(clf, input_shape)
    validation.check_choice("start", start, STARTS)
    confidence = validation.check_float(
        "confidence", confidence, minimum=0.0, maximum=1.0, strict_min=True, strict_max=True
    )
    steps = validation.check_int("steps", steps, minimum=1)
    step_size = validation.check_float("step_size", step_size, minimum=0.0, strict_min=True)
    l2 = validation.check_float("l2", l2, minimum=0.0)
    cls = _classes(clf, classes, shape)
    x0 = _start_images(start, cls.shape[0], shape, clf.bounds, make_generator(generator)).to(clf.device)
    cls = cls.to(clf.device)
    t0 = time.perf_counter()
    with clf.attack_mode(warn_train_mode=False):
        x, used = _ascend(clf, x0, cls, confidence=confidence, steps=steps, step_size=step_size, l2=l2)
        with torch.no_grad():
            prob = F.softmax(clf(x), dim=1).gather(1, cls[:, None]).squeeze(1)
    return FoolingImages(
        x=x.detach(),
        classes=cls.cpu(),
        confidence=prob.cpu(),
        reached=(prob >= confidence).cpu(),
        steps=used.cpu(),
        start=start,
        target_confidence=confidence,
        seconds=time.perf_counter() - t0,
        info={
            "steps_max": steps,
            "step_size": step_size,
            "l2": l2,
            "method": "gradient ascent (sign steps) on log p_c",
        },
    )


def _classes(clf: Classifier, classes: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """The requested class indices (default all), checked against the model's classes."""
    k_all = _num_classes(clf, shape)
    if classes is None:
        return torch.arange(k_all)
    cls = torch.as_tensor(classes).long().reshape(-1)
    validation.check_labels(cls, cls.shape[0], k_all, name="classes")
    return cls


def _start_images(
    start: str, k: int, shape: tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """``k`` starting images: uniform noise in the box, its lower bound, or its middle."""
    lo, hi = bounds
    if start == "noise":
        return lo + (hi - lo) * torch.rand((k, *shape), generator=generator)
    if start == "blank":
        return torch.full((k, *shape), lo)
    return torch.full((k, *shape), (lo + hi) / 2)


def _ascend(
    clf: Classifier,
    x0: torch.Tensor,
    cls: torch.Tensor,
    *,
    confidence: float,
    steps: int,
    step_size: float,
    l2: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign-gradient ascent on ``log p_c - l2 |x - x0|^2``; each image stops once ``p_c >= confidence``.

    Returns the images and, per image, the step at which the target was reached (``steps`` if never).
    """
    k = x0.shape[0]
    lo, hi = clf.bounds
    x = x0.clone()
    done = torch.zeros(k, dtype=torch.bool, device=x0.device)
    used = torch.full((k,), steps, dtype=torch.long, device=x0.device)
    for i in range(steps):
        xg = x.detach().requires_grad_(True)
        logp = F.log_softmax(clf(xg), dim=1).gather(1, cls[:, None]).squeeze(1)
        newly = (~done) & (logp.detach().exp() >= confidence)
        used[newly] = i
        done |= newly
        if bool(done.all()):
            break
        objective = logp - l2 * (xg - x0).reshape(k, -1).pow(2).sum(1)
        (grad,) = torch.autograd.grad(objective.sum(), xg)
        step = step_size * grad.sign()
        step[done] = 0
        x = (x + step).clamp(lo, hi)
    return x, used


@dataclass
class RubbishRate:
    """How often Gaussian noise is classified as a real class with confidence above ``threshold``."""

    fraction: float
    threshold: float
    n: int
    mean_confidence: float
    class_counts: list[int]
    noise_mean: float
    noise_std: float
    distribution: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@torch.no_grad()
def rubbish_class_rate(
    model: nn.Module,
    *,
    n: int = 1000,
    mean: float | None = None,
    std: float | None = None,
    threshold: float = 0.5,
    input_shape: tuple[int, ...] | None = None,
    generator: torch.Generator | int | None = None,
    batch_size: int = 500,
) -> RubbishRate:
    """Fraction of Gaussian-noise inputs the model assigns to some class with softmax confidence > ``threshold``.

    Noise is ``clip(N(mean, std^2))`` per pixel, independently, clipped to the model's box. By default
    ``mean``/``std`` are the model's normalisation statistics (the data's per-pixel moments, so the noise
    has the data's first two moments) when it has them, else the box's middle and a quarter of its width.

    Goodfellow, Shlens & Szegedy (arXiv:1412.6572) discuss such "rubbish class" examples (after Nguyen
    et al.) and measure how often Gaussian noise is classified as a real class with confidence above 0.5;
    this function computes that statistic.

    Returns:
        :class:`RubbishRate` with the fraction, the mean top-1 confidence and the predicted-class counts.

    Examples:
        >>> rubbish_class_rate(clf, n=10000).fraction
    """
    clf = as_classifier(model)
    shape = _input_shape(clf, input_shape)
    n = validation.check_int("n", n, minimum=1)
    threshold = validation.check_float("threshold", threshold, minimum=0.0, maximum=1.0)
    lo, hi = clf.bounds
    if mean is None:
        mean = float(clf.mean.mean()) if clf.has_normalization else (lo + hi) / 2
    if std is None:
        std = float(clf.std.mean()) if clf.has_normalization else (hi - lo) / 4
    mean = validation.check_float("mean", mean)
    std = validation.check_float("std", std, minimum=0.0)
    gen = make_generator(generator)
    confs, preds = [], []
    was = clf.training
    clf.eval()
    try:
        for s in range(0, n, batch_size):
            m = min(batch_size, n - s)
            x = (mean + std * torch.randn((m, *shape), generator=gen)).clamp(lo, hi).to(clf.device)
            p = F.softmax(clf(x), dim=1)
            c, k = p.max(1)
            confs.append(c.cpu())
            preds.append(k.cpu())
    finally:
        clf.train(was)
    conf = torch.cat(confs)
    pred = torch.cat(preds)
    num = clf.num_classes or int(pred.max()) + 1
    return RubbishRate(
        fraction=float((conf > threshold).float().mean()),
        threshold=threshold,
        n=n,
        mean_confidence=float(conf.mean()),
        class_counts=torch.bincount(pred, minlength=num).tolist(),
        noise_mean=mean,
        noise_std=std,
        distribution=f"clip(N({mean:.4g}, {std:.4g}^2), [{lo:g}, {hi:g}]) i.i.d. per input value",
    )
