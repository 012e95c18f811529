"""A binary adversarial-example detector (Metzen et al. 2017) and the combined model that can reject inputs:
a defense known to fail against an adaptive attack on classifier and detector jointly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from advlab import io, validation
from advlab.attacks.iterative import iterate
from advlab.defenses._adversarial import crafting
from advlab.defenses.base import Trainer, register_defense
from advlab.losses import cross_entropy
from advlab.models import Classifier, as_classifier
from advlab.settings import NonNegativeFloat, NonNegativeInt, PositiveInt
from advlab.threat import ThreatModel, per_example
from advlab.zoo import load_model

DETECTOR_FILE = "detector.safetensors"
DETECTOR_CARD = "detector.json"
STEP_FACTOR = 2.5
"""The PGD training examples step by ``STEP_FACTOR * eps / steps``."""


class DetectorNetwork(nn.Module):
    """A small binary detector on raw inputs; outputs one logit per example (> 0 means "adversarial").

    Images: ``Conv(C, h, 3, stride 2) - ReLU - Conv(h, 2h, 3, stride 2) - ReLU - global average - Linear(2h, 1)``;
    flat inputs: ``Linear(D, 4h) - ReLU - Linear(4h, 1)``. Initialised from ``seed`` under a forked RNG.
    """

    def __init__(self, input_shape: tuple[int, ...], hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.hidden = hidden
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if len(self.input_shape) == 3:
                c = self.input_shape[0]
                self.net = nn.Sequential(
                    nn.Conv2d(c, hidden, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(hidden, 2 * hidden, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(),
                    nn.Linear(2 * hidden, 1),
                )
            else:
                self.net = nn.Sequential(
                    nn.Flatten(),
                    nn.Linear(math.prod(self.input_shape), 4 * hidden),
                    nn.ReLU(),
                    nn.Linear(4 * hidden, 1),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DetectedModel(nn.Module):
    """Classifier + detector as one network with ``C + 1`` logits: ``[z_1..z_C, max_j z_j + d(x)]``.

    The last logit wins (the input is **rejected**) exactly when the detector logit ``d(x) > 0``; otherwise the
    classifier's prediction stands. This is the combined model of Carlini & Wagner (arXiv:1705.07263, §4):
    one differentiable function an attacker can target directly.
    """

    def __init__(self, classifier: Classifier, detector: DetectorNetwork) -> None:
        super().__init__()
        self.classifier = classifier
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.classifier(x)
        d = self.detector(x)
        return torch.cat([z, (z.max(1).values + d)[:, None]], dim=1)


def detected_classifier(classifier: Classifier, detector: DetectorNetwork) -> Classifier:
    """The combined model as a Classifier with ``num_classes + 1`` outputs (the last one means "rejected")."""
    classifier = as_classifier(classifier)
    n = None if classifier.num_classes is None else classifier.num_classes + 1
    out = Classifier(
        DetectedModel(classifier, detector),
        bounds=classifier.bounds,
        num_classes=n,
        input_shape=classifier.input_shape,
        card=dict(classifier.card),
    )
    out.eval()
    return out


def rejected(logits: torch.Tensor) -> torch.Tensor:
    """Per example: the combined model rejects the input (its last logit is the largest)."""
    return logits.argmax(1) == logits.shape[1] - 1


@torch.no_grad()
def accuracy_with_rejection(combined: Classifier, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How the combined model does on ``(x, y)`` when rejections count for the defense.

    Returns ``accuracy`` (predicted ``y``, not rejected), ``rejected`` (fraction rejected) and ``defended``
    (predicted ``y`` or rejected): on adversarial inputs ``defended`` is the robust accuracy of a detector
    defense, ``1 - defended`` the attack's success rate (misclassified **and** undetected). On clean inputs
    ``rejected`` is the false-positive rate.
    """
    logits = torch.cat([combined(x[i : i + 500]) for i in range(0, x.shape[0], 500)])
    rej = rejected(logits)
    correct = (logits.argmax(1) == y) & ~rej
    return {
        "accuracy": float(correct.float().mean()),
        "rejected": float(rej.float().mean()),
        "defended": float((correct | rej).float().mean()),
    }


def detector_aware_loss(kappa: float = 1.0):
    """Attack loss on the combined logits: classifier cross-entropy minus ``kappa * softplus(d(x))``.

    Maximising it pushes the classifier away from the true label and the detector logit
    ``d = z_{C+1} - max_j z_j`` below 0 (undetected), jointly.
    """

    def loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
        z, last = logits[:, :-1], logits[:, -1]
        d = last - z.max(1).values
        ce = cross_entropy(z, labels, targeted)
        return ce - kappa * F.softplus(d)

    return loss


def adaptive_attack(
    combined: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    step_size: float | None = None,
    kappa: float = 1.0,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD on classifier and detector jointly (:func:`detector_aware_loss`); keeps, per example, an iterate
    that is misclassified and not rejected when one is found.

    Args:
        combined: the model of :func:`detected_classifier`.
        x: clean inputs; y: their labels.
        threat: the perturbation set.
        steps: PGD steps; step_size default ``2.5 * eps / steps``.
        kappa: weight of the detector term.
        restarts: random restarts.
        generator: for the random starts.

    Returns:
        ``x_adv`` inside the threat model.

    References:
        Carlini & Wagner, "Adversarial Examples Are Not Easily Detected: Bypassing Ten Detection Methods",
        AISec 2017, arXiv:1705.07263.

    Examples:
        >>> x_adv = adaptive_attack(combined, x, y, ThreatModel("linf", 0.3))
        >>> accuracy_with_rejection(combined, x_adv, y)["defended"]
    """
    steps = validation.check_int("steps", steps, minimum=1)
    restarts = validation.check_int("restarts", restarts, minimum=1)
    step_size = 2.5 * threat.eps / steps if step_size is None else step_size
    loss_fn = detector_aware_loss(kappa)
    best = x.clone()
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with crafting(combined):
        for r in range(restarts):
            x_adv = threat.random_start(x, generator) if (restarts > 1 or r > 0) else x.clone()
            for _ in range(steps):
                x_adv = x_adv.detach().requires_grad_(True)
                logits = combined(x_adv)
                (grad,) = torch.autograd.grad(loss_fn(logits, y, False).sum(), x_adv)
                with torch.no_grad():
                    fooled = (logits.argmax(1) != y) & ~rejected(logits) & ~done
                    best = torch.where(per_example(fooled, x), x_adv.detach(), best)
                    done |= fooled
                x_adv = threat.project(x_adv.detach() + step_size * threat.ascent_direction(grad, x_adv), x)
            with torch.no_grad():
                logits = combined(x_adv)
                fooled = (logits.argmax(1) != y) & ~rejected(logits) & ~done
                best = torch.where(per_example(fooled | (~done & (r == restarts - 1)), x), x_adv, best)
                done |= fooled
    return best.detach()


@register_defense("detector")
class DetectorTraining(Trainer):
    """A binary detector trained to separate clean inputs from PGD examples (Metzen et al. 2017).

    The first ``classifier_epochs`` epochs train the classifier with cross-entropy (skip them with 0 for a
    pre-trained one); the remaining epochs train the detector with the classifier frozen, on each batch's
    clean inputs (label 0) and PGD examples of radius ``eps`` against the classifier (label 1), balanced
    binary cross-entropy. ``model_`` is the combined model of :func:`detected_classifier`: ``C + 1`` logits,
    the last meaning **rejected**.

    How evaluation treats rejections: :func:`accuracy_with_rejection` counts a rejected adversarial input as
    defended (the attack must misclassify *and* evade the detector), and a rejected clean input as an error
    (false positive). The generic evaluation engine run on ``model_`` treats "rejected" as one more wrong
    class, i.e. counts rejections as errors (conservative for clean accuracy, pessimistic for the detector).

    **Known to fail.** The detector only knows the attack it was trained on (PGD against the classifier
    alone). The combined model is differentiable, so an adaptive white-box attack on classifier and detector
    jointly — :func:`adaptive_attack`, PGD on ``CE(classifier) - kappa * softplus(detector logit)`` — finds
    examples that are misclassified and undetected (Carlini & Wagner 2017, arXiv:1705.07263).

    Args:
        eps: linf radius of the PGD training examples (>= 0).
        steps: PGD steps for the training examples.
        classifier_epochs: leading epochs that train the classifier (0 = classifier already trained).
        hidden: detector width.
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: a setting out of range (``classifier_epochs`` must leave at least one detector epoch).

    References:
        Metzen, Genewein, Fischer & Bischoff, "On Detecting Adversarial Perturbations", ICLR 2017,
        arXiv:1702.04267; Carlini & Wagner, arXiv:1705.07263.

    Examples:
        >>> t = DetectorTraining(eps=0.3, classifier_epochs=3, epochs=5).fit(model, train)
        >>> accuracy_with_rejection(t.model_, x_adv, y)
    """

    find_unused_parameters = True  # the classifier's epochs leave the detector without gradients, and vice versa
    eps: float
    steps: int
    classifier_epochs: int
    hidden: int

    def __init__(
        self,
        *,
        eps: NonNegativeFloat = 0.3,
        steps: PositiveInt = 10,
        classifier_epochs: NonNegativeInt = 0,
        hidden: PositiveInt = 16,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        validation.check_int("classifier_epochs", classifier_epochs, maximum=self.epochs - 1)
        self.threat = ThreatModel("linf", self.eps)

    def fit(self, model: torch.nn.Module, train: Any, val: Any = None, **kwargs: Any) -> DetectorTraining:
        model = as_classifier(model)
        if model.input_shape is None:
            raise ValueError("model: the detector needs the model's input_shape; give Classifier(input_shape=...)")
        self.threat = ThreatModel("linf", self.eps, model.bounds)
        self.detector_ = DetectorNetwork(model.input_shape, self.hidden, seed=self.seed).to(model.device)
        super().fit(detected_classifier(model, self.detector_), train, None, **kwargs)
        if val is not None:  # the history's val_accuracy is not meaningful with C + 1 outputs: report it here
            xv, yv = validation.as_xy(val, "val")
            self.val_metrics_ = accuracy_with_rejection(self.model_, xv.to(model.device), yv.to(model.device))
        return self

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        combined = cast(DetectedModel, model.module)
        clf, det = combined.classifier, combined.detector
        if epoch < self.classifier_epochs:
            logits = clf(x)
            return F.cross_entropy(logits, y), logits
        gen = self.generator_at(epoch, x.device)
        with crafting(clf):
            x0 = self.threat.random_start(x, gen)
            x_adv = iterate(
                clf,
                x,
                x0,
                y,
                False,
                self.threat,
                steps=self.steps,
                step_size=STEP_FACTOR * self.threat.eps / self.steps,
                loss_fn=cross_entropy,
                name="detector-training",
            ).x_adv
            logits = clf(x)
        scores = det(torch.cat([x, x_adv.detach()]))
        target = torch.cat([torch.zeros(x.shape[0]), torch.ones(x.shape[0])]).to(scores)
        loss = F.binary_cross_entropy_with_logits(scores, target)
        return loss, logits

    def save_artifacts(self, folder: str | Path) -> None:
        """Write ``detector.safetensors`` and ``detector.json`` into the model folder."""
        folder = Path(folder)
        io.save_safetensors(folder / DETECTOR_FILE, self.detector_.state_dict())
        io.write_json(folder / DETECTOR_CARD, {"input_shape": list(self.detector_.input_shape), "hidden": self.hidden})


def load_detected(folder: str | Path, device: str | torch.device | None = None) -> Classifier:
    """The combined model of a folder written by ``advlab train --defense detector``."""
    folder = Path(folder)
    clf = load_model(folder, device=device)
    meta = io.read_json(folder / DETECTOR_CARD)
    det = DetectorNetwork(tuple(meta["input_shape"]), int(meta["hidden"]))
    det.load_state_dict(load_file(str(folder / DETECTOR_FILE)))
    return detected_classifier(clf, det.to(clf.device))
