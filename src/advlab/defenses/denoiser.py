"""A denoising autoencoder in front of the classifier, trained on noisy and adversarial inputs: known to fail."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from advlab import io
from advlab.defenses._adversarial import fgsm_from
from advlab.defenses.base import Trainer, register_defense
from advlab.models import Classifier, as_classifier
from advlab.settings import NonNegativeFloat, PositiveFloat, PositiveInt
from advlab.threat import ThreatModel
from advlab.zoo import load_model

DENOISER_FILE = "denoiser.safetensors"
DENOISER_CARD = "denoiser.json"


class Denoiser(nn.Module):
    """A small denoising autoencoder on raw inputs with a residual output, ``clip(x + g(x))``.

    Images ``(C, H, W)``: ``Conv(C, h, 3) - ReLU - Conv(h, h, 3) - ReLU - Conv(h, C, 3)``; flat inputs: an MLP
    ``D - h - D``. Initialised from ``seed`` (PyTorch's default scheme under a forked RNG).
    """

    def __init__(
        self, input_shape: tuple[int, ...], hidden: int = 32, bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.hidden = hidden
        self.bounds = bounds
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if len(self.input_shape) == 3:
                c = self.input_shape[0]
                self.net = nn.Sequential(
                    nn.Conv2d(c, hidden, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(hidden, hidden, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(hidden, c, 3, padding=1),
                )
            else:
                d = math.prod(self.input_shape)
                self.net = nn.Sequential(
                    nn.Flatten(),
                    nn.Linear(d, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, d),
                    nn.Unflatten(1, self.input_shape),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.net(x)).clamp(*self.bounds)


class DenoisedModel(nn.Module):
    """``classifier(denoiser(x))``: differentiable end to end."""

    def __init__(self, denoiser: Denoiser, classifier: Classifier) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.denoiser(x))


def denoised_classifier(denoiser: Denoiser, classifier: Classifier) -> Classifier:
    """The composed model as a :class:`~advlab.models.Classifier` on raw inputs."""
    classifier = as_classifier(classifier)
    out = Classifier(
        DenoisedModel(denoiser, classifier),
        bounds=classifier.bounds,
        num_classes=classifier.num_classes,
        input_shape=classifier.input_shape,
        card=dict(classifier.card),
    )
    out.train(classifier.training)
    return out


@register_defense("denoiser")
class DenoiserDefense(Trainer):
    """A denoising autoencoder ``D`` trained in front of the classifier ``f``; the defended model is ``f(D(x))``.

    Each batch: ``loss = CE(f(x), y) + recon_weight * |D(x_tilde) - x|^2``, where ``x_tilde`` is ``x`` plus
    Gaussian noise (std ``sigma``) for half of the batch and an FGSM example of radius ``eps`` against the
    current ``f`` for the other half (denoisers "trained on adversarial examples", Gu & Rigazio 2014). With
    ``train_classifier=False`` the (pre-trained) classifier is frozen and only ``D`` learns. The composed
    model is ``model_``; the classifier passed in is trained in place and saved by the CLI, the denoiser by
    :meth:`save_artifacts` (``denoiser.safetensors``), and :func:`load_denoised` rebuilds the composition.

    **Known to fail.** ``f(D(x))`` is differentiable end to end, so white-box PGD on the composition (not on
    ``f`` alone, which is what the denoiser was trained against) finds perturbations that survive the
    denoiser (Carlini & Wagner, "MagNet and 'Efficient Defenses...' are not robust", arXiv:1711.08478).
    A non-differentiable denoiser would call for BPDA instead (Athalye et al. 2018, arXiv:1802.00420).

    Args:
        sigma: std of the Gaussian training noise (>= 0).
        eps: linf radius of the FGSM training examples (>= 0; 0 = noise only).
        recon_weight: weight of the reconstruction loss (> 0).
        hidden: width of the denoiser.
        train_classifier: also train the classifier (with clean cross-entropy).
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: a setting out of range.

    References:
        Gu & Rigazio, "Towards Deep Neural Network Architectures Robust to Adversarial Examples",
        arXiv:1412.5068; Meng & Chen, "MagNet", arXiv:1705.09064; Carlini & Wagner, arXiv:1711.08478.

    Examples:
        >>> t = DenoiserDefense(sigma=0.3, eps=0.2).fit(model, train)
        >>> defended = t.model_
    """

    sigma: float
    eps: float
    recon_weight: float
    hidden: int
    train_classifier: bool

    def __init__(
        self,
        *,
        sigma: NonNegativeFloat = 0.3,
        eps: NonNegativeFloat = 0.2,
        recon_weight: PositiveFloat = 1.0,
        hidden: PositiveInt = 32,
        train_classifier: bool = True,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)

    def fit(self, model: torch.nn.Module, train: Any, val: Any = None, **kwargs: Any) -> DenoiserDefense:
        model = as_classifier(model)
        if model.input_shape is None:
            raise ValueError("model: the denoiser needs the model's input_shape; give Classifier(input_shape=...)")
        self.denoiser_ = Denoiser(model.input_shape, self.hidden, model.bounds, seed=self.seed).to(model.device)
        if not self.train_classifier:
            for p in model.parameters():
                p.requires_grad_(False)
        try:
            super().fit(denoised_classifier(self.denoiser_, model), train, val, **kwargs)
        finally:
            if not self.train_classifier:
                for p in model.parameters():
                    p.requires_grad_(True)
        return self

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        composed = cast(DenoisedModel, model.module)
        clf, den = composed.classifier, composed.denoiser
        gen = self.generator_at(epoch, x.device)
        half = x.shape[0] // 2
        noisy = (x[half:] + self.sigma * torch.randn(x[half:].shape, generator=gen, device=x.device)).clamp(*clf.bounds)
        if self.eps > 0 and half > 0:
            threat = ThreatModel("linf", self.eps, clf.bounds)
            adv = fgsm_from(clf, x[:half], x[:half], y[:half], threat, self.eps)
        else:
            adv = x[:half]
        x_tilde = torch.cat([adv, noisy])
        recon = F.mse_loss(den(x_tilde), x, reduction="none").flatten(1).sum(1).mean()
        logits = clf(x) if self.train_classifier else model(x)
        loss = self.recon_weight * recon + (F.cross_entropy(logits, y) if self.train_classifier else 0.0)
        return loss, model(x).detach() if self.train_classifier else logits

    def save_artifacts(self, folder: str | Path) -> None:
        """Write ``denoiser.safetensors`` and ``denoiser.json`` into the model folder."""
        folder = Path(folder)
        io.save_safetensors(folder / DENOISER_FILE, self.denoiser_.state_dict())
        io.write_json(
            folder / DENOISER_CARD,
            {
                "input_shape": list(self.denoiser_.input_shape),
                "hidden": self.hidden,
                "bounds": list(self.denoiser_.bounds),
            },
        )


def load_denoised(folder: str | Path, device: str | torch.device | None = None) -> Classifier:
    """The composed ``f(D(x))`` of a folder written by ``advlab train --defense denoiser``."""
    folder = Path(folder)
    clf = load_model(folder, device=device)
    meta = io.read_json(folder / DENOISER_CARD)
    den = Denoiser(tuple(meta["input_shape"]), int(meta["hidden"]), tuple(meta["bounds"]))
    den.load_state_dict(load_file(str(folder / DENOISER_FILE)))
    out = denoised_classifier(den.to(clf.device), clf)
    out.eval()
    return out
