"""Activation clustering (Chen et al. 2018): a backdoored label's activations split into two clusters, one small.

Within each label the penultimate-layer activations are reduced to 10 dimensions (independent component
analysis in the paper; PCA as an option), clustered by 2-means, and the smaller cluster is declared poisoned
when it is small enough (relative size) and the split is clean enough (silhouette score): the two criteria of the
paper's analysis section. The flagged rows are removed and the network retrained.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from advlab import validation
from advlab.settings import OneOf, Range, settings_of, validate_all

SIZE_THRESHOLD = 0.35
"""A cluster holding at most this share of its label is small enough to be poisons (Chen et al.; ART's default)."""
SILHOUETTE_THRESHOLD = 0.10
"""A 2-means split with at least this silhouette score is a real split (the default of ART, the authors' code)."""
DIMENSIONS = 10
"""Dimensions the activations are reduced to before clustering (Chen et al., Section 4)."""


@dataclass(frozen=True)
class ClassClusters:
    """The 2-means split of one label.

    Attributes:
        label: the label.
        size: rows with that label.
        small_share: the smaller cluster's share of them.
        silhouette: the split's silhouette score.
        poisoned: whether the smaller cluster was declared poisoned.
    """

    label: int
    size: int
    small_share: float
    silhouette: float
    poisoned: bool


@dataclass(frozen=True)
class ClusteringResult:
    """What :func:`activation_clustering` found.

    Attributes:
        scores: per row, ``(1 - share of its cluster) * max(silhouette, 0)``: high for rows of a small, well
            separated cluster; ``(N,)``.
        flagged: the rows of the clusters declared poisoned, sorted (int64).
        classes: the split of each label.
    """

    scores: torch.Tensor
    flagged: torch.Tensor
    classes: tuple[ClassClusters, ...]


def reduce(features: np.ndarray, method: str, dims: int, seed: int) -> np.ndarray:
    """``features`` reduced to ``dims`` dimensions by FastICA (``"ica"``) or PCA (``"pca"``), each fit on them.

    FastICA runs on the leading principal components (its own whitening step is that projection); components of
    no variance (dead units, fewer rows than dimensions) are dropped first, where FastICA would divide by zero.
    """
    from sklearn.decomposition import PCA, FastICA
    from sklearn.exceptions import ConvergenceWarning

    dims = min(dims, features.shape[1], features.shape[0] - 1)
    pca = PCA(n_components=dims, random_state=seed).fit(features)
    live = pca.explained_variance_ > 1e-9 * max(float(pca.explained_variance_.max()), 1e-300)
    points = np.asarray(pca.transform(features))[:, live]
    if method == "pca" or points.shape[1] < 2:
        return points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ica = FastICA(n_components=points.shape[1], whiten="unit-variance", random_state=seed, max_iter=400)
        return np.asarray(ica.fit_transform(points))


def split_label(points: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """2-means cluster ids of ``points`` and the split's silhouette score (0.0 when the split is degenerate)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    ids = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(points)
    if len(set(ids.tolist())) < 2:
        return ids, 0.0
    sample = min(points.shape[0], 5000)
    return ids, float(silhouette_score(points, ids, sample_size=sample, random_state=seed))


def activation_clustering(
    features: torch.Tensor,
    y: torch.Tensor,
    *,
    reduction: Annotated[str, OneOf(("ica", "pca"))] = "ica",
    dims: Annotated[int, Range(1)] = DIMENSIONS,
    size_threshold: Annotated[float, Range(0, 1, strict_min=True)] = SIZE_THRESHOLD,
    silhouette_threshold: Annotated[float, Range(-1, 1)] = SILHOUETTE_THRESHOLD,
    seed: Annotated[int, Range(0)] = 0,
) -> ClusteringResult:
    """Cluster each label's activations in two and flag the smaller cluster where it looks like poisons.

    A label's smaller cluster is declared poisoned when it holds at most ``size_threshold`` of the label's rows
    **and** the split's silhouette score is at least ``silhouette_threshold``. Labels with fewer than four rows
    are left alone.

    Args:
        features: penultimate-layer activations of the training rows, ``(N, D)``
            (:func:`~advlab.poisoning.features.penultimate_features`).
        y: the training labels (as poisoned), ``(N,)``.
        reduction: ``"ica"`` (scikit-learn FastICA, as in the paper) or ``"pca"``.
        dims: dimensions kept (10 in the paper).
        size_threshold: the largest share of a label that a poisoned cluster may hold (0.35).
        silhouette_threshold: the smallest silhouette score of a poisoned label's split (0.10).
        seed: seed of the reduction, k-means and the silhouette sample.

    Returns:
        The scores, the flagged rows and each label's split.

    Raises:
        ValueError: features and labels of different lengths.

    References:
        Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy & Srivastava, "Detecting Backdoor Attacks on Deep
        Neural Networks by Activation Clustering", SafeAI@AAAI 2019, arXiv:1811.03728, Sections 4-5.

    Examples:
        >>> result = activation_clustering(features, y)
        >>> [c.label for c in result.classes if c.poisoned]
        [0]
    """
    given = {"reduction": reduction, "dims": dims, "size_threshold": size_threshold, "seed": seed}
    given["silhouette_threshold"] = silhouette_threshold
    validate_all("activation_clustering", settings_of(activation_clustering), given)
    features = validation.as_tensor("features", features, float32="all")
    if features.dim() != 2 or features.shape[0] != y.shape[0]:
        raise ValueError(f"features: expected shape (N, D) with N = {y.shape[0]} labels, got {tuple(features.shape)}")
    scores = torch.zeros(y.shape[0])
    flagged, classes = [], []
    for label in torch.unique(y).tolist():
        rows = (y == label).nonzero().flatten()
        if rows.numel() < 4:
            continue
        points = reduce(features[rows].double().numpy(), reduction, dims, seed)
        ids, silhouette = split_label(points, seed)
        small = int(np.argmin(np.bincount(ids, minlength=2)))
        share = torch.as_tensor(np.bincount(ids, minlength=2) / ids.shape[0])[torch.as_tensor(ids)]
        scores[rows] = ((1 - share) * max(silhouette, 0.0)).float()
        small_share = float((ids == small).mean())
        poisoned = small_share <= size_threshold and silhouette >= silhouette_threshold
        classes.append(ClassClusters(int(label), int(rows.numel()), small_share, silhouette, poisoned))
        if poisoned:
            flagged.append(rows[torch.as_tensor(ids == small)])
    rows_out = torch.cat(flagged).sort().values if flagged else torch.zeros(0, dtype=torch.int64)
    return ClusteringResult(scores=scores, flagged=rows_out, classes=tuple(classes))
