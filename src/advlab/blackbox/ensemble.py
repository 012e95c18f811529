"""Ensembles of surrogate models as one differentiable source for transfer attacks (Liu et al. 2017).

Liu, Chen, Liu & Song (arXiv:1611.02770, section 3.2) craft on an ensemble of ``k`` white-box models with
softmax outputs ``J_i`` by attacking the fused prediction ``sum_i alpha_i J_i(x)``; examples that fool every
member of the ensemble tend to transfer to a held-out black-box model. :class:`Ensemble` computes the
logarithm of that mixture as its logits (``combine="probs"``, the paper's choice), so the cross-entropy an attack
maximises is exactly the paper's ``-log((sum_i alpha_i J_i(x)) · 1_y)``. Averaging logits or log-softmax outputs
are available for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from advlab import validation
from advlab.models import Classifier

COMBINE = ("probs", "logits", "log_softmax")


class Ensemble(nn.Module):
    """Fuse several classifiers' outputs: ``log(sum_i w_i softmax(z_i))`` (``"probs"``), or weighted averages.

    Members receive the raw input; give :class:`~advlab.models.Classifier` members when they normalise
    internally. All members must output the same number of classes.

    Args:
        models: the surrogate models (at least one).
        weights: non-negative ensemble weights ``alpha_i`` (normalised to sum to 1); default uniform.
        combine: ``"probs"`` (Liu et al. 2017), ``"logits"`` or ``"log_softmax"``.

    Examples:
        >>> ens = Ensemble([cnn, mlp, from_sklearn(lr, (1, 28, 28))])
        >>> x_adv = advlab.attacks.pgd(ensemble_classifier([cnn, mlp]), x, y, threat).x_adv
    """

    def __init__(
        self, models: Sequence[nn.Module], weights: Sequence[float] | None = None, combine: str = "probs"
    ) -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("models: expected at least one model to ensemble, got an empty list")
        for i, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise TypeError(
                    f"models[{i}]: expected a torch.nn.Module or advlab.Classifier, got {type(m).__name__}. "
                    "Wrap scikit-learn models with advlab.nonneural.from_sklearn first."
                )
        classes = {m.num_classes for m in models if isinstance(m, Classifier) and m.num_classes is not None}
        if len(classes) > 1:
            raise ValueError(f"models: members disagree on the number of classes: {sorted(classes)}")
        validation.check_choice("combine", combine, COMBINE)
        if weights is None:
            weights = [1.0] * len(models)
        weights = [validation.check_float(f"weights[{i}]", w, minimum=0.0) for i, w in enumerate(weights)]
        if len(weights) != len(models):
            raise ValueError(f"weights: expected one weight per model ({len(models)}), got {len(weights)}")
        total = sum(weights)
        if total <= 0:
            raise ValueError("weights: at least one weight must be positive")
        self.members = nn.ModuleList(models)
        self.weights = [w / total for w in weights]
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x).to(x.dtype) for m in self.members]
        if self.combine == "logits":
            return cast(torch.Tensor, sum(w * z for w, z in zip(self.weights, outs)))
        logp = [torch.log_softmax(z, dim=1) for z in outs]
        if self.combine == "log_softmax":
            return cast(torch.Tensor, sum(w * lp for w, lp in zip(self.weights, logp)))
        stacked = torch.stack([lp + math.log(w) for w, lp in zip(self.weights, logp) if w > 0])
        return torch.logsumexp(stacked, dim=0)


def ensemble_classifier(
    models: Sequence[nn.Module],
    weights: Sequence[float] | None = None,
    *,
    combine: str = "probs",
    bounds: tuple[float, float] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Classifier:
    """An :class:`Ensemble` wrapped as a :class:`~advlab.models.Classifier`, ready for any white-box attack.

    Args:
        models: surrogate models (``Classifier`` members keep their own normalisation).
        weights: ensemble weights (default uniform).
        combine: ``"probs"`` (Liu et al.), ``"logits"`` or ``"log_softmax"``.
        bounds: the input box; default the first ``Classifier`` member's.
        input_shape: per-example input shape; default the first ``Classifier`` member's.

    Returns:
        Classifier in eval mode.

    References:
        Liu, Chen, Liu & Song, "Delving into Transferable Adversarial Examples and Black-box Attacks",
        arXiv:1611.02770.

    Examples:
        >>> source = ensemble_classifier([net_a, net_b, net_c])
        >>> x_adv = advlab.attacks.fgsm(source, x, y, ThreatModel("linf", 0.3)).x_adv
    """
    ens = Ensemble(models, weights, combine)
    first: Any = next((m for m in models if isinstance(m, Classifier)), None)
    nc = first.num_classes if first is not None else None
    clf = Classifier(
        ens,
        bounds=bounds if bounds is not None else (first.bounds if first is not None else (0.0, 1.0)),
        num_classes=nc,
        input_shape=input_shape if input_shape is not None else (first.input_shape if first is not None else None),
    )
    return clf.eval()
