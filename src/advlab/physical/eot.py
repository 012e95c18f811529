"""Expectation over transformation (EOT): a model wrapper that averages over random transformations inside forward.

Wrapping a classifier with :func:`with_transformations` turns any registered gradient attack (``fgsm``,
``bim``, ``pgd``, ``mifgsm``...) into its EOT version (Athalye et al. 2018, arXiv:1707.07397): each forward pass
draws ``samples`` transformations from the wrapper's own generator and averages the resulting logits (or
log-probabilities), so the gradient the attack follows is a Monte-Carlo estimate of the gradient of the
expected output under the transformation distribution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab import validation
from advlab.attacks.registry import AttackConfig, make_attack
from advlab.models import Classifier, as_classifier
from advlab.physical.transforms import Transform, parse_transform, with_jpeg_method

AVERAGES = ("logits", "log_probs")
"""What the wrapper averages: raw logits, or log-softmax outputs (the expected log-likelihood of Athalye et al.)."""


class ExpectationOverTransformation(nn.Module):
    """``forward(x) = mean_k model(t_k(x))`` over ``samples`` transformations drawn per call.

    Args:
        model: a classifier on raw inputs (``advlab.Classifier`` or any module returning logits).
        transform: an :class:`~advlab.physical.transforms.Transform` or a spec string.
        samples: transformations averaged per forward pass (``k``).
        average: ``"logits"`` (mean logits) or ``"log_probs"`` (mean log-softmax, i.e. the expected
            log-likelihood whose gradient EOT follows for the cross-entropy loss).
        seed: seed of the wrapper's own generator (reset with :meth:`reset`).
        jpeg: how JPEG steps are computed inside the wrapper: ``"dct"`` (default; the batched, differentiable
            torch approximation :func:`~advlab.physical.transforms.jpeg_dct`) or ``"pillow"`` (the real encoder
            with a straight-through gradient, exact but about 5x slower on CPU). Evaluate with the real one.

    The mean is computed as ``out_1 + mean_k (out_k - out_1)`` so that identical samples (an identity
    transformation) give the plain model's output bit for bit.

    Examples:
        >>> eot = ExpectationOverTransformation(clf, "rotate=-10..10,noise=0..0.05", samples=30)
        >>> logits = eot(x)
    """

    def __init__(
        self,
        model: nn.Module,
        transform: Transform | str,
        samples: int = 10,
        *,
        average: str = "logits",
        seed: int = 0,
        jpeg: str = "dct",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module or advlab.Classifier, got {type(model).__name__}")
        self.model = model
        bounds = getattr(model, "bounds", (0.0, 1.0))
        self.transform = parse_transform(transform, bounds=bounds) if isinstance(transform, str) else transform
        if not isinstance(self.transform, Transform):
            raise TypeError(f"transform: expected a Transform or a spec string, got {type(transform).__name__}")
        self.transform = with_jpeg_method(self.transform, jpeg)
        self.jpeg = jpeg
        self.samples = validation.check_int("samples", samples, minimum=1)
        validation.check_choice("average", average, AVERAGES)
        self.average = average
        self.seed = validation.check_int("seed", seed, minimum=0)
        self.generator = torch.Generator()
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the wrapper's generator (to ``seed``, or the constructor's seed)."""
        self.generator.manual_seed(self.seed if seed is None else validation.check_int("seed", seed, minimum=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self._sample(x)
        acc = torch.zeros_like(first)
        for _ in range(self.samples - 1):
            acc = acc + (self._sample(x) - first)
        return first + acc / self.samples

    def _sample(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output (logits or log-probabilities) on one random transformation of ``x``."""
        out = self.model(self.transform(x, self.generator))
        return F.log_softmax(out, dim=1) if self.average == "log_probs" else out

    def extra_repr(self) -> str:
        return (
            f"samples={self.samples}, average={self.average!r}, transform={self.transform.spec()!r}, seed={self.seed}"
        )


def with_transformations(
    model: nn.Module,
    transform: Transform | str,
    samples: int = 10,
    *,
    average: str = "logits",
    seed: int = 0,
    jpeg: str = "dct",
) -> Classifier:
    """A :class:`~advlab.models.Classifier` whose forward pass is the EOT average of ``model`` under ``transform``.

    The transformation is applied to raw inputs (before the model's own normalisation); the wrapper keeps
    the model's bounds, number of classes and input shape, so every registered attack accepts it and measures
    eps in the same units.

    Args:
        model: the classifier to attack.
        transform: the transformation distribution (a :class:`Transform` or a spec string).
        samples: transformations per forward pass.
        average: ``"logits"`` or ``"log_probs"``.
        seed: seed of the wrapper's generator.
        jpeg: ``"dct"`` (differentiable approximation, default) or ``"pillow"`` (real JPEG, straight-through).

    Returns:
        The wrapped classifier (its ``.module`` is the :class:`ExpectationOverTransformation`).

    References:
        Athalye, Engstrom, Ilyas & Kwok, "Synthesizing Robust Adversarial Examples", arXiv:1707.07397.

    Examples:
        >>> eot_clf = with_transformations(clf, "print-photo", samples=30)
        >>> result = advlab.attacks.pgd(eot_clf, x, y, ThreatModel("linf", 0.2))
    """
    clf = as_classifier(model)
    wrapper = ExpectationOverTransformation(clf, transform, samples, average=average, seed=seed, jpeg=jpeg)
    out = Classifier(
        wrapper,
        bounds=clf.bounds,
        num_classes=clf.num_classes,
        input_shape=clf.input_shape,
        card={
            **clf.card,
            "eot": {
                "transform": wrapper.transform.spec(),
                "samples": wrapper.samples,
                "average": average,
                "jpeg": jpeg,
            },
        },
    )
    out.train(clf.training)
    return out


def eot_attack(
    attack: Any,
    model: nn.Module,
    x: Any,
    y: Any,
    threat: Any,
    transform: Transform | str,
    *,
    samples: int = 10,
    average: str = "logits",
    goal: Any = None,
    seed: int = 0,
    jpeg: str = "dct",
) -> Any:
    """Run a registered attack (name or config) against the EOT average of ``model`` under ``transform``.

    Returns the attack's :class:`~advlab.result.AttackResult`; its ``success`` is judged on the EOT model
    (the averaged logits). Judge the result on the plain model, or on transformed inputs, yourself.

    Examples:
        >>> result = eot_attack("pgd", clf, x, y, ThreatModel("linf", 0.2), "noise=0..0.1", samples=20)
    """
    cfg = make_attack(attack, norm=threat.norm) if isinstance(attack, str) else attack
    if not isinstance(cfg, AttackConfig):
        raise TypeError(f"attack: expected an attack name or an AttackConfig, got {type(attack).__name__}")
    eot_model = with_transformations(model, transform, samples, average=average, seed=seed, jpeg=jpeg)
    return cfg(eot_model, x, y, threat, goal=goal, generator=seed)
