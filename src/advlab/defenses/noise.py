"""Gaussian noise augmentation and noise at test time: two defenses known to fail against adaptive attacks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab import validation
from advlab.defenses.base import Trainer, register_defense
from advlab.models import Classifier, as_classifier
from advlab.settings import NonNegativeFloat


class _InputNoise(nn.Module):
    """``classifier(clip(x + sigma * N(0, I)))`` on raw inputs; draws from torch's default RNG on every call."""

    def __init__(self, classifier: Classifier, sigma: float) -> None:
        super().__init__()
        self.classifier = classifier
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.classifier.bounds
        return self.classifier((x + self.sigma * torch.randn_like(x)).clamp(lo, hi))


def noisy_classifier(model: Classifier, sigma: float) -> Classifier:
    """A randomised model: every forward pass adds fresh Gaussian noise of std ``sigma`` to the raw input.

    The noise comes from torch's default RNG (like dropout at test time), so the evaluation engine, which
    detects random models, seeds it per stage and attacks through EOT (Athalye et al. 2018).

    Raises:
        ValueError: ``sigma < 0``.

    Examples:
        >>> random_clf = noisy_classifier(clf, sigma=0.3)
    """
    sigma = validation.check_float("sigma", sigma, minimum=0.0)
    model = as_classifier(model)
    out = Classifier(
        _InputNoise(model, sigma),
        bounds=model.bounds,
        num_classes=model.num_classes,
        input_shape=model.input_shape,
        card=dict(model.card),
    )
    out.eval()
    return out


@register_defense("noise")
class GaussianNoiseTraining(Trainer):
    """Train on ``clip(x + N(0, sigma^2 I))`` (Gaussian data augmentation); optionally add noise at test time.

    **Known to fail.** Noise augmentation smooths the model against random perturbations, which are far weaker
    than worst-case ones in high dimension: white-box PGD on the trained model breaks it at the usual eps.
    With ``test_sigma > 0`` the deployed model (``defended_model_``, built by :func:`noisy_classifier`) is
    random, which only hides gradients: PGD with expectation over transformation (EOT, averaging the
    gradient/logits over noise draws, Athalye, Carlini & Wagner 2018, arXiv:1802.00420) breaks it; the
    evaluation engine applies EOT automatically to random models.

    Args:
        sigma: std of the training noise on raw inputs (>= 0).
        test_sigma: std of the test-time noise (0 = a deterministic deployed model).
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: ``sigma < 0`` or ``test_sigma < 0``.

    References:
        Zantedeschi, Nicolae & Rawat, "Efficient Defenses Against Adversarial Attacks", arXiv:1707.06728
        (Gaussian augmentation); Athalye, Carlini & Wagner, arXiv:1802.00420 (EOT breaks randomised defenses).

    Examples:
        >>> t = GaussianNoiseTraining(sigma=0.3, test_sigma=0.3).fit(model, train)
        >>> random_model = t.defended_model_
    """

    sigma: float
    test_sigma: float

    def __init__(self, *, sigma: NonNegativeFloat = 0.3, test_sigma: NonNegativeFloat = 0.0, **settings: Any) -> None:
        super().__init__(**settings)

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gen = self.generator_at(epoch, x.device)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        logits = model((x + self.sigma * noise).clamp(*model.bounds))
        return F.cross_entropy(logits, y), logits

    def fit(self, model: torch.nn.Module, train: Any, val: Any = None, **kwargs: Any) -> GaussianNoiseTraining:
        super().fit(model, train, val, **kwargs)
        self.defended_model_ = noisy_classifier(self.model_, self.test_sigma) if self.test_sigma > 0 else self.model_
        return self
