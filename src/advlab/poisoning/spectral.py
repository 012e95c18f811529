"""Spectral signatures (Tran, Li & Madry 2018): backdoor poisons stand out along the top singular vector of a class.

Within each label, the learned representations of the poisons differ from the clean ones along one direction,
which the top singular vector of the centred representations picks up. Each row's score is its squared
projection on that vector; the highest-scoring ``1.5 * epsilon`` rows of every label are removed (Algorithm 1 of
the paper, ``epsilon`` an upper bound on the poisons in a label), and the network is retrained without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch

from advlab import validation
from advlab.settings import Range, settings_of, validate_all

REMOVAL_FACTOR = 1.5
"""How many times the expected poison count of a label is removed from it (Tran et al., Algorithm 1)."""


@dataclass(frozen=True)
class SpectralResult:
    """What :func:`spectral_signatures` found.

    Attributes:
        scores: each row's squared projection on its label's top singular vector, ``(N,)``.
        flagged: the rows removed, sorted (int64).
        removed_per_class: ``{label: rows removed from it}``.
    """

    scores: torch.Tensor
    flagged: torch.Tensor
    removed_per_class: dict[int, int]


def spectral_scores(features: torch.Tensor) -> torch.Tensor:
    """The outlier score of each row of one label: ``((r - mean) . v)^2``, ``v`` the top right singular vector.

    Args:
        features: the representations of one label's rows, ``(n, D)``.

    Returns:
        The scores, ``(n,)`` (zeros for fewer than two rows).

    Examples:
        >>> spectral_scores(torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]])).tolist()
        [1.0, 1.0, 4.0]
    """
    if features.shape[0] < 2:
        return torch.zeros(features.shape[0])
    centred = features.double() - features.double().mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[0]).pow(2).float()


def removal_counts(y: torch.Tensor, expected_rate: float | None, remove: int | None, factor: float) -> dict[int, int]:
    """Rows to remove from each label: ``remove``, or ``ceil(factor * expected_rate * label size)``.

    Raises:
        ValueError: neither or both given; a count above a label's size, or counts that take every row, naming the
            option that asked for it.
    """
    if (expected_rate is None) == (remove is None):
        raise ValueError(
            "expected_rate/remove: give exactly one (the expected share of poisons in a label, or a count)"
        )
    counts: dict[int, int] = {}
    for label, size in zip(*torch.unique(y, return_counts=True), strict=True):
        n = int(size)
        count = remove if remove is not None else math.ceil(factor * float(expected_rate) * n)  # type: ignore[arg-type]
        if count > n:
            option = "remove" if remove is not None else "expected_rate"
            raise ValueError(
                f"{option}: asks to remove {count} rows from label {int(label)}, which has only {n}; "
                f"lower {option} (at most {n} rows, or a rate of at most {1 / factor:.3g})"
            )
        counts[int(label)] = count
    if sum(counts.values()) >= y.numel() > 0:
        option = "remove" if remove is not None else "expected_rate"
        raise ValueError(
            f"{option}: removes every one of the {y.numel()} rows (each label whole), leaving nothing to retrain on "
            f"or to compare; lower {option}" + ("" if remove is not None else f" below {1 / factor:.3g} or factor")
        )
    return counts


def spectral_signatures(
    features: torch.Tensor,
    y: torch.Tensor,
    *,
    expected_rate: Annotated[float | None, Range(0, 1, strict_min=True)] = None,
    remove: Annotated[int | None, Range(0)] = None,
    factor: Annotated[float, Range(0, strict_min=True)] = REMOVAL_FACTOR,
) -> SpectralResult:
    """Score every training row by its label's spectral signature and flag the top ones of each label.

    Args:
        features: penultimate-layer representations of the training rows, ``(N, D)``
            (:func:`~advlab.poisoning.features.penultimate_features`).
        y: the training labels (as poisoned), ``(N,)``.
        expected_rate: the paper's ``epsilon`` as a share: an upper bound on the share of poisons within a label;
            ``ceil(factor * expected_rate * label size)`` rows are removed from each label.
        remove: instead of ``expected_rate``, the number of rows removed from each label.
        factor: the multiple of the expected poisons removed (1.5 in the paper).

    Returns:
        The scores, the flagged rows and the count removed from each label.

    Raises:
        ValueError: features and labels of different lengths; neither or both of ``expected_rate``/``remove``;
            more rows asked for than a label has.

    References:
        Tran, Li & Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018, arXiv:1811.00636, Algorithm 1.

    Examples:
        >>> result = spectral_signatures(features, y, expected_rate=0.1)
        >>> x_clean, y_clean = poisoned.without(result.flagged)
    """
    given = {"expected_rate": expected_rate, "remove": remove, "factor": factor}
    validate_all("spectral_signatures", settings_of(spectral_signatures), given)
    features = validation.as_tensor("features", features, float32="all")
    if features.dim() != 2 or features.shape[0] != y.shape[0]:
        raise ValueError(f"features: expected shape (N, D) with N = {y.shape[0]} labels, got {tuple(features.shape)}")
    counts = removal_counts(y, expected_rate, remove, factor)
    scores = torch.zeros(y.shape[0])
    flagged = []
    for label, count in counts.items():
        rows = (y == label).nonzero().flatten()
        scores[rows] = spectral_scores(features[rows])
        flagged.append(rows[scores[rows].argsort(descending=True)[:count]])
    rows_out = torch.cat(flagged).sort().values if flagged else torch.zeros(0, dtype=torch.int64)
    return SpectralResult(scores=scores, flagged=rows_out, removed_per_class=counts)
