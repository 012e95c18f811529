"""An ensemble of independently initialised networks with averaged logits: a defense known to fail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from advlab.defenses._adversarial import reinitialized_copy
from advlab.defenses.base import Trainer, register_defense
from advlab.models import Classifier, as_classifier
from advlab.settings import Range
from advlab.zoo import load_model, save_model

MEMBER_SEED_STRIDE = 1_000
"""Member ``i`` is re-initialised from the seed ``seed * MEMBER_SEED_STRIDE + i``."""


class AveragedLogits(nn.Module):
    """``mean_i member_i(x)`` over classifiers that each take raw inputs."""

    def __init__(self, members: list[Classifier]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def averaged_classifier(members: list[Classifier]) -> Classifier:
    """A :class:`~advlab.models.Classifier` whose logits are the average of the members' logits."""
    if len(members) < 1:
        raise ValueError("members: expected at least one classifier")
    first = as_classifier(members[0])
    out = Classifier(
        AveragedLogits([as_classifier(m) for m in members]),
        bounds=first.bounds,
        num_classes=first.num_classes,
        input_shape=first.input_shape,
        card=dict(first.card),
    )
    out.train(first.training)
    return out


@register_defense("ensemble")
class EnsembleTraining(Trainer):
    """An ensemble of independently initialised copies of the model whose logits are averaged.

    ``members`` copies (same data order) are trained with their summed cross-entropies; the defended model
    ``model_`` averages their logits.

    The model passed to ``fit`` is member 0 and is trained in place; the others are re-initialised copies
    (``ensemble_members_``). The losses are separable, so each member is trained exactly as it would be alone.

    **Known to fail.** Averaging logits gives a smooth, differentiable model; white-box PGD on the averaged
    model (not on one member) breaks it, as He et al. showed for ensembles of weak defenses
    (arXiv:1706.04701). Transfer between members is high, so the ensemble also adds little against
    transfer attacks.

    Args:
        members: number of networks (>= 2).
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: ``members < 2``.

    References:
        He, Wei, Chen, Carlini & Song, "Adversarial Example Defenses: Ensembles of Weak Defenses are not
        Strong", WOOT 2017, arXiv:1706.04701.

    Examples:
        >>> t = EnsembleTraining(members=3, epochs=5).fit(model, train)
        >>> t.model_  # averaged logits
    """

    members: int

    def __init__(self, *, members: Annotated[int, Range(2)] = 3, **settings: Any) -> None:
        super().__init__(**settings)

    def fit(self, model: torch.nn.Module, train: Any, val: Any = None, **kwargs: Any) -> EnsembleTraining:
        model = as_classifier(model)
        others = [reinitialized_copy(model, self.seed * MEMBER_SEED_STRIDE + i) for i in range(1, self.members)]
        self.ensemble_members_ = [model, *others]
        super().fit(averaged_classifier(self.ensemble_members_), train, val, **kwargs)
        return self

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m(x) for m in cast(AveragedLogits, model.module).members]
        loss = cast(torch.Tensor, sum(F.cross_entropy(z, y) for z in outs))
        return loss, torch.stack(outs).mean(0)

    def save_artifacts(self, folder: str | Path) -> None:
        """Save members 1..k-1 as model folders ``folder/member-i`` (member 0 is the model saved by the CLI)."""
        for i, m in enumerate(self.ensemble_members_[1:], start=1):
            save_model(m, Path(folder) / f"member-{i}", training=self.settings())


def load_ensemble(folder: str | Path) -> Classifier:
    """The averaged classifier of a folder written by ``advlab train --defense ensemble``."""
    folder = Path(folder)
    members = [load_model(folder)] + [load_model(p) for p in sorted(folder.glob("member-*"))]
    return averaged_classifier(members)
