"""Adversarial and virtual adversarial training on word embeddings (Miyato, Dai & Goodfellow 2016).

The trainers are advlab's: the baseline is :class:`~advlab.defenses.standard.StandardTraining`, virtual adversarial
training is :class:`~advlab.defenses.vat.VAT` (its loop, semi-supervised batching, settings and seeded power
iteration) with the perturbation moved from the input to the normalised word embeddings, and the adversarial
direction is the L2 :class:`~advlab.threat.ThreatModel`'s steepest ascent. Only *where* the perturbation is added
differs from the image trainers:

* adversarial: ``r_adv = eps * g / ||g||_2`` with ``g`` the gradient of the cross-entropy with respect to the whole
  sequence of embeddings of a sentence (one norm per sentence); loss ``CE(v) + CE(v + r_adv)``;
* virtual adversarial: ``r_vadv = eps * d``, ``d`` from :func:`~advlab.defenses.vat.vat_direction` on the
  embeddings; loss ``CE(v) + alpha * KL(p(.|v) || p(.|v + r_vadv))``, on unlabelled sentences too.

The text trainers are not registered in ``advlab train --defense`` (they need a text classifier); ``advlab text``
runs them.

Examples:
    >>> trainer = make_trainer("vat", epochs=3, eps=1.0)
    >>> trainer.fit(model, (x_ids, y), unlabeled=x_ids_unlabelled)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from advlab import validation
from advlab.defenses.base import Trainer
from advlab.defenses.standard import StandardTraining
from advlab.defenses.vat import VAT, virtual_adversarial_loss
from advlab.models import Classifier
from advlab.settings import PositiveFloat
from advlab.text.model import text_network
from advlab.threat import ThreatModel

METHODS = ("baseline", "at", "vat", "at-vat")
"""Training methods: none, adversarial, virtual adversarial, both (the rows of Miyato et al. 2016's result tables)."""
UNBOUNDED = (-math.inf, math.inf)
"""Embeddings have no box: the L2 ball alone bounds the perturbation."""

Head = Callable[[torch.Tensor], torch.Tensor]


def embedded(model: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, Head, torch.Tensor]:
    """The normalised embeddings of the id matrix ``x``, the network above them, and their logits (with gradient).

    Args:
        model: a text classifier (:func:`~advlab.text.model.text_classifier`).
        x: a float id matrix ``(N, T)``.

    Returns:
        ``(emb, head, logits)``: ``emb`` ``(N, T', D)``, ``head`` maps embeddings of these sentences to logits,
        ``logits = head(emb)``.

    Raises:
        TypeError: ``model`` is not a text classifier.

    Examples:
        >>> emb, head, logits = embedded(model, vocab.encode(["a good film"]))
    """
    net = text_network(model)
    emb, lengths = net.embed(x)
    head = functools.partial(net.classify, lengths=lengths)
    return emb, head, head(emb)


def adversarial_perturbation(
    head: Head, emb: torch.Tensor, y: torch.Tensor, threat: ThreatModel, logits: torch.Tensor | None = None
) -> torch.Tensor:
    """``eps * g / ||g||_2``: the L2 threat model's steepest ascent on the cross-entropy, one norm per sentence.

    Args:
        head: maps embeddings ``(N, T, D)`` to logits.
        emb: the embeddings (the gradient is taken with respect to them; the graph is kept for the caller).
        y: labels.
        threat: an L2 :class:`~advlab.threat.ThreatModel` (its ``eps`` is the perturbation's norm).
        logits: ``head(emb)`` if already computed.

    Returns:
        The perturbation (detached), of ``emb``'s shape, L2 norm ``eps`` over each sentence's embeddings.

    Examples:
        >>> r = adversarial_perturbation(head, emb, y, ThreatModel("l2", 1.0, (-math.inf, math.inf)))
    """
    if not emb.requires_grad:
        emb = emb.detach().requires_grad_(True)
        logits = None
    logits = head(emb) if logits is None else logits
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), emb, retain_graph=True)
    return threat.eps * threat.ascent_direction(grad.detach())


class EmbeddingAdversarial(Trainer):
    """Adversarial training on word embeddings: minimise ``CE(v) + CE(v + r_adv)`` (Miyato et al. 2016, eq. 2-3).

    Args:
        eps: L2 norm of ``r_adv`` over a sentence's normalised embeddings. The authors' code defaults to 5.0 for
            pretrained embeddings; 1.0 is the measured setting from scratch (BENCHMARKS.md; 2.5 kept a 64-unit
            model at chance for two epochs).
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Examples:
        >>> EmbeddingAdversarial(eps=1.0, epochs=3).fit(text_classifier(vocab), (x_ids, y))
    """

    name = "text-at"
    eps: float

    def __init__(self, *, eps: PositiveFloat = 1.0, **settings: Any) -> None:
        super().__init__(**settings)
        self.threat = ThreatModel("l2", eps, UNBOUNDED)

    def adversarial_loss(self, head: Head, emb: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``CE(v + r_adv)`` for the batch whose embeddings are ``emb``."""
        return F.cross_entropy(head(emb + adversarial_perturbation(head, emb, y, self.threat, logits)), y)

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb, head, logits = embedded(model, x)
        return F.cross_entropy(logits, y) + self.adversarial_loss(head, emb, y, logits), logits


class EmbeddingVAT(VAT):
    """:class:`~advlab.defenses.vat.VAT` with the virtual adversarial perturbation on the normalised embeddings.

    Everything but :meth:`lds` is VAT's: ``CE + alpha * LDS``, on the labelled batch or (semi-supervised) on the
    unlabelled one, ``entmin``, the seeded power iteration.

    Args:
        eps: L2 norm of ``r_vadv`` over a sentence's normalised embeddings (see :class:`EmbeddingAdversarial`).
        xi: finite-difference scale of the power iteration (the authors' code: 0.1, on embeddings of norm ~
            ``sqrt(length * dim)``).

    Examples:
        >>> EmbeddingVAT(eps=1.0, epochs=3).fit(text_classifier(vocab), (x_ids, y), unlabeled=x_u)
    """

    name = "text-vat"

    def __init__(self, *, eps: PositiveFloat = 1.0, xi: PositiveFloat = 0.1, **settings: Any) -> None:
        super().__init__(**settings)

    def lds(self, model: Classifier, x: torch.Tensor, epoch: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean LDS of the sentences ``x`` with the perturbation on their embeddings, and their logits."""
        gen = self.generator_at(epoch, x.device)
        emb, head, logits = embedded(model, x)
        lds = virtual_adversarial_loss(head, emb, logits, eps=self.eps, xi=self.xi, n_power=self.n_power, generator=gen)
        return lds, logits


class EmbeddingATVAT(EmbeddingVAT):
    """Both: :class:`EmbeddingVAT`'s loss plus the adversarial term ``CE(v + r_adv)`` on the labelled batch.

    The adversarial term uses the same ``eps`` as the virtual adversarial one. It takes
    its own forward pass of the labelled batch (with its own dropout mask).

    Examples:
        >>> EmbeddingATVAT(eps=1.0, epochs=3).fit(text_classifier(vocab), (x_ids, y))
    """

    name = "text-at-vat"

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float, x_unlabeled: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = super().training_step(model, x, y, epoch, x_unlabeled)
        emb, head, clean = embedded(model, x)
        threat = ThreatModel("l2", self.eps, UNBOUNDED)
        adv = F.cross_entropy(head(emb + adversarial_perturbation(head, emb, y, threat, clean)), y)
        return loss + adv, logits


TRAINERS: dict[str, type[Trainer]] = {
    "baseline": StandardTraining,
    "at": EmbeddingAdversarial,
    "vat": EmbeddingVAT,
    "at-vat": EmbeddingATVAT,
}


def check_method(method: Any) -> str:
    """``method`` if it is one of :data:`METHODS`.

    Args:
        method: the name to check.

    Returns:
        The name.

    Raises:
        ValueError: another name (with a did-you-mean hint).
    """
    if not isinstance(method, str) or method not in METHODS:
        hint = validation.did_you_mean(str(method), METHODS)
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}.{hint}")
    return method


def make_trainer(method: str, *, eps: float = 1.0, xi: float = 0.1, **settings: Any) -> Trainer:
    """The trainer of ``method`` with the shared settings.

    Args:
        method: ``"baseline"``, ``"at"``, ``"vat"`` or ``"at-vat"``.
        eps: perturbation norm (AT and VAT; ignored by the baseline).
        xi: VAT's finite-difference scale (ignored by the others).
        **settings: :class:`~advlab.defenses.base.Trainer` settings (``epochs``, ``lr``, ``seed``...); the VAT
            methods take as many unlabelled sentences per step as labelled ones unless ``unlabeled_batch_size`` is
            given.

    Returns:
        An unfitted trainer.

    Raises:
        ValueError: an unknown method or a bad setting.

    Examples:
        >>> make_trainer("at", eps=1.0, epochs=3, progress=False)
    """
    method = check_method(method)
    if method == "baseline":
        return StandardTraining(**settings)
    if method == "at":
        return EmbeddingAdversarial(eps=eps, **settings)
    settings.setdefault("unlabeled_batch_size", settings.get("batch_size", 128))
    return TRAINERS[method](eps=eps, xi=xi, **settings)
