"""Models that are not neural networks: exact differentiable scikit-learn models and attacks on trees and kNN.

* :func:`from_sklearn` — fitted linear models and kernel SVMs as exact, differentiable ``advlab.Classifier``\\ s;
* :func:`fool_linear` — Karpathy's "breaking linear classifiers" demo along class templates;
* :func:`tree_attack` (exact) and :func:`forest_attack` (heuristic) — minimal perturbations for tree models;
* :func:`knn_attack` — bisection toward other-class training points for k-nearest neighbours.
"""

from advlab.nonneural.knn import KNNAttackResult, knn_attack
from advlab.nonneural.linear_templates import LinearFoolingResult, affine_weights, fool_linear, plot_linear_fooling
from advlab.nonneural.sklearn_models import KernelSVM, LinearDecision, from_sklearn
from advlab.nonneural.trees import LeafBoxes, TreeAttackResult, forest_attack, leaf_boxes, tree_attack

__all__ = [
    "KNNAttackResult",
    "KernelSVM",
    "LeafBoxes",
    "LinearDecision",
    "LinearFoolingResult",
    "TreeAttackResult",
    "affine_weights",
    "fool_linear",
    "forest_attack",
    "from_sklearn",
    "knn_attack",
    "leaf_boxes",
    "plot_linear_fooling",
    "tree_attack",
]
