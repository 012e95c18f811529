"""k-NN label sanitisation (Paudice et al. 2018): a label its neighbours confidently disagree with is a flipped one.

For every training row the labels of its ``k`` nearest neighbours (Euclidean, on the flattened inputs or on
learned features) vote; when the most common label holds at least ``eta`` of the votes and is not the row's
own, the row is flagged and relabelled to it (the paper's sanitiser) or removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from advlab import validation
from advlab.settings import OneOf, Range, settings_of, validate_all


@dataclass(frozen=True)
class SanitisedLabels:
    """What :func:`knn_sanitise` found.

    Attributes:
        scores: per row, the share of its neighbours whose label differs from its own, ``(N,)``.
        flagged: rows whose neighbours' majority (with confidence ``>= eta``) disagrees, sorted (int64).
        majority: per row, the neighbours' most common label, ``(N,)``.
        y: the sanitised labels: the flagged rows relabelled to ``majority`` (``action="relabel"``) or the input
            labels unchanged (``action="remove"``: drop ``flagged`` instead).
    """

    scores: torch.Tensor
    flagged: torch.Tensor
    majority: torch.Tensor
    y: torch.Tensor


def neighbour_labels(points: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The labels of each row's ``k`` nearest other rows, ``(N, k)`` (scikit-learn's exact search)."""
    from sklearn.neighbors import NearestNeighbors

    if k >= points.shape[0]:
        raise ValueError(f"k: asks for {k} neighbours but the data has only {points.shape[0]} rows; lower k")
    search = NearestNeighbors(n_neighbors=k + 1).fit(points.numpy())
    _, index = search.kneighbors(points.numpy())
    own = np.arange(points.shape[0])[:, None]
    # each row is its own nearest neighbour unless it has duplicates: drop it wherever it is, else the farthest
    keep = np.where((index == own).any(1, keepdims=True), index != own, np.arange(k + 1)[None, :] < k)
    return y[torch.as_tensor(index[keep].reshape(-1, k))]


def knn_sanitise(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: Annotated[int, Range(1)] = 10,
    eta: Annotated[float, Range(0, 1, strict_min=True)] = 0.5,
    action: Annotated[str, OneOf(("relabel", "remove"))] = "relabel",
) -> SanitisedLabels:
    """Flag (and relabel) the rows whose ``k`` nearest neighbours agree on another label with confidence ``eta``.

    Args:
        x: the training inputs or their features, ``(N, ...)`` (flattened for the distance).
        y: the training labels (possibly flipped), ``(N,)``.
        k: neighbours consulted (10 in the paper).
        eta: the smallest share of the neighbours' votes the majority label needs (0.5 in the paper).
        action: ``"relabel"`` the flagged rows to the majority (the paper), or ``"remove"`` them.

    Returns:
        The disagreement scores, the flagged rows, the majority labels and the sanitised labels.

    Raises:
        ValueError: ``x`` and ``y`` of different lengths; ``k`` not below the number of rows.

    References:
        Paudice, Muñoz-González & Lupu, "Label Sanitization against Label Flipping Poisoning Attacks",
        ECML PKDD Workshops 2018, arXiv:1803.00992, Algorithm 1.

    Examples:
        >>> result = knn_sanitise(x_train, y_flipped, k=10, eta=0.5)
        >>> model = train(x_train, result.y)
    """
    validate_all("knn_sanitise", settings_of(knn_sanitise), {"k": k, "eta": eta, "action": action})
    x = validation.as_tensor("x", x, float32="all")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x: has {x.shape[0]} rows but y has {y.shape[0]}")
    votes = neighbour_labels(x.detach().flatten(1).float().cpu(), y.cpu(), k)
    num_classes = int(y.max()) + 1 if y.numel() else 0
    counts = torch.zeros(y.shape[0], max(num_classes, 1)).scatter_add_(1, votes, torch.ones(votes.shape))
    confidence, majority = counts.max(1)
    confident = (confidence / k >= eta) & (majority != y.cpu())
    flagged = confident.nonzero().flatten()
    sanitised = y.clone()
    if action == "relabel":
        sanitised[flagged.to(y.device)] = majority[flagged].to(y.dtype).to(y.device)
    scores = (votes != y.cpu()[:, None]).float().mean(1)
    return SanitisedLabels(scores=scores, flagged=flagged, majority=majority, y=sanitised)
