"""Virtual adversarial training (Miyato et al.): the local distributional smoothness penalty, supervised or
semi-supervised, with the power-iteration approximation of the virtual adversarial direction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from advlab import validation
from advlab.defenses.base import Trainer, register_defense
from advlab.defenses.trades import kl_to
from advlab.models import Classifier
from advlab.settings import NonNegativeFloat, PositiveFloat, PositiveInt
from advlab.threat import flatten, per_example


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Each example of ``d`` scaled to unit L2 norm."""
    return d / per_example(flatten(d).norm(dim=1) + 1e-12, d)


def vat_direction(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    xi: float = 1e-6,
    n_power: int = 1,
    generator: torch.Generator | None = None,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unit-L2 approximation of the virtual adversarial direction at ``x`` by ``n_power`` power iterations.

    The direction maximising ``KL(p(.|x) || p(.|x + r))`` for small ``r`` is the top eigenvector of the Hessian
    ``H`` of that KL at ``r = 0``; each iteration replaces ``d`` by ``grad_r KL(p(.|x) || p(.|x + xi d))``
    (which is ``xi * H d`` to first order) and normalises it.

    Args:
        model: maps inputs to logits (a module, or any function such as the layers above an embedding).
        x: inputs ``(N, ...)``.
        xi: finite-difference scale (paper: 1e-6).
        n_power: power iterations (paper: 1).
        generator: draws the random start ``d ~ N(0, I)``.
        logits: ``model(x)`` if already computed (treated as a constant).

    Returns:
        ``d`` of the shape of ``x``, unit L2 norm per example.

    References:
        Miyato et al., "Virtual Adversarial Training", TPAMI 2018, arXiv:1704.03976, §3.3.

    Examples:
        >>> r_adv = eps * vat_direction(model, x, generator=torch.Generator().manual_seed(0))
    """
    with torch.no_grad():
        clean = model(x) if logits is None else logits.detach()
    d = _unit(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    for _ in range(n_power):
        d = (xi * d).requires_grad_(True)
        (grad,) = torch.autograd.grad(kl_to(clean, model(x + d)).sum(), d)
        d = _unit(grad.detach())
    return d


def virtual_adversarial_loss(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    logits: torch.Tensor,
    *,
    eps: float,
    xi: float = 1e-6,
    n_power: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean local distributional smoothness ``KL(p(.|x) || p(.|x + eps * d))`` over the batch (the VAT loss).

    ``d`` is :func:`vat_direction` (unit L2 norm per example over all of an example's coordinates) and
    ``p(.|x)`` is held constant. ``x`` is whatever ``model`` reads: images for :class:`VAT`, the normalised word
    embeddings of a sentence for :mod:`advlab.text` (``model`` is then the network above the embedding layer).

    Args:
        model: maps ``x`` to logits.
        x: the batch ``(N, ...)`` to perturb.
        logits: ``model(x)``, already computed (its gradient is not followed here).
        eps: L2 norm of the virtual adversarial perturbation.
        xi: finite-difference scale of the power iteration.
        n_power: power iterations.
        generator: draws the power iteration's random start.

    Returns:
        A scalar tensor (differentiable in ``model``'s parameters and in ``x``), ``>= 0``.

    Examples:
        >>> logits = model(x)
        >>> loss = F.cross_entropy(logits, y) + virtual_adversarial_loss(model, x, logits, eps=2.0)
    """
    d = vat_direction(model, x, xi=xi, n_power=n_power, generator=generator, logits=logits)
    return kl_to(logits.detach(), model(x + eps * d)).mean()


def split_labelled(
    y: torch.Tensor, n_labels: int, num_classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a balanced labelled subset (``n_labels / num_classes`` per class, seeded) and of the rest.

    Raises:
        ValueError: ``n_labels`` not a positive multiple of ``num_classes`` or more than a class holds.
    """
    n_labels = validation.check_int("labels", n_labels, minimum=num_classes)
    if n_labels % num_classes:
        raise ValueError(f"labels: expected a multiple of the {num_classes} classes (balanced), got {n_labels}")
    per = n_labels // num_classes
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        idx = (y == c).nonzero().flatten()
        if idx.numel() < per:
            raise ValueError(f"labels: class {c} has only {idx.numel()} examples, fewer than the {per} asked per class")
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:per]])
    labelled = torch.cat(chosen).sort().values
    mask = torch.ones(y.shape[0], dtype=torch.bool)
    mask[labelled] = False
    return labelled, mask.nonzero().flatten()


@register_defense("vat")
class VAT(Trainer):
    """Minimise ``CE(labelled) + alpha * mean LDS(x)`` with ``LDS(x) = KL(p(.|x) || p(.|x + r_vadv))``.

    ``r_vadv = eps * d`` where ``d`` is the power-iteration direction of :func:`vat_direction` (L2 norm, as in
    the paper). ``p(.|x)`` is held constant in the LDS term. Supervised when fitted on labelled data only (LDS
    on the labelled batch); semi-supervised when unlabelled data is given (``fit(model, train, val,
    unlabeled=x_u)``, or labels ``-1`` in ``train``): an epoch is then one pass over the unlabelled set in
    batches of ``unlabeled_batch_size``, the labelled set cycling in batches of ``batch_size``, and LDS is taken
    on the unlabelled batch. ``entmin=True`` adds the conditional entropy of ``p(.|x)`` on that batch
    (VAT+EntMin).

    Args:
        eps: L2 norm of the virtual adversarial perturbation (> 0), on [0, 1] pixels; tune per dataset.
        xi: finite-difference scale of the power iteration.
        n_power: power iterations (paper: 1).
        alpha: weight of the LDS term (paper: 1).
        entmin: add entropy minimisation.
        unlabeled_batch_size: unlabelled examples per step in semi-supervised mode (paper: 256 with 64 labelled).
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: a setting out of range.

    References:
        Miyato, Maeda, Koyama & Ishii, "Virtual Adversarial Training: A Regularization Method for Supervised and
        Semi-Supervised Learning", TPAMI 2018, arXiv:1704.03976; Miyato et al. 2015, arXiv:1507.00677.

    MNIST with 100 labels (measured, BENCHMARKS.md): the wong-cnn with ``eps=2.0, entmin=True``, 30 epochs,
    labelled batch 64, Adam 1e-3 with a cosine schedule reaches 1.76% test error in about 9 minutes on one CPU
    core: ``advlab train --data mnist --defense vat --labels 100 --epochs 30 --batch-size 64 --schedule cosine
    --set eps=2.0 --set entmin=true --out runs/vat100``.

    Examples:
        >>> VAT(eps=2.0, epochs=20).fit(model, (x_l, y_l), test, unlabeled=x_u)
    """

    accepts_unlabeled = True
    eps: float
    xi: float
    n_power: int
    alpha: float
    entmin: bool
    unlabeled_batch_size: int

    def __init__(
        self,
        *,
        eps: PositiveFloat = 2.0,
        xi: PositiveFloat = 1e-6,
        n_power: PositiveInt = 1,
        alpha: NonNegativeFloat = 1.0,
        entmin: bool = False,
        unlabeled_batch_size: PositiveInt = 256,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)

    def lds(self, model: Classifier, x: torch.Tensor, epoch: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean LDS on ``x`` and the logits of ``x`` (with gradient), for the training loss.

        Trainers that perturb another representation than the input (word embeddings, :mod:`advlab.text`)
        override this and call :func:`virtual_adversarial_loss` on it.
        """
        gen = self.generator_at(epoch, x.device)
        logits = model(x)
        lds = virtual_adversarial_loss(model, x, logits, eps=self.eps, xi=self.xi, n_power=self.n_power, generator=gen)
        return lds, logits

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float, x_unlabeled: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x_unlabeled is None:
            lds, logits = self.lds(model, x, epoch)
            loss = F.cross_entropy(logits, y) + self.alpha * lds
            ent_logits = logits
        else:
            logits = model(x)
            lds, ent_logits = self.lds(model, x_unlabeled, epoch)
            loss = F.cross_entropy(logits, y) + self.alpha * lds
        if self.entmin:
            logp = F.log_softmax(ent_logits, dim=1)
            loss = loss - (logp.exp() * logp).sum(1).mean()
        return loss, logits
