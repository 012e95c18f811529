"""Exact PyTorch re-implementations of fitted scikit-learn linear models and kernel SVMs, as advlab Classifiers.

:func:`from_sklearn` reads the learned parameters of a fitted estimator and returns an
:class:`advlab.Classifier` whose logits reproduce the estimator's ``decision_function`` (float64 inside), so
every white-box attack runs on it with exact input gradients.

Supported estimators:

* linear classifiers with ``coef_``/``intercept_`` (``LogisticRegression`` — multinomial, binary, or the old
  ``multi_class="ovr"`` —, ``LinearSVC``, ``SGDClassifier``, ``RidgeClassifier``, ``Perceptron``): logits are
  ``x @ coef_.T + intercept_``, whose argmax is exactly ``predict``;
* ``SVC``/``NuSVC`` with ``kernel`` in ``linear``, ``rbf``, ``poly``, ``sigmoid``: the pairwise (one-vs-one)
  decision values are rebuilt from ``support_vectors_``, ``dual_coef_``, ``intercept_`` and the kernel
  parameters, then aggregated (see :class:`KernelSVM`);
* ``OneVsRestClassifier`` around any of the above binary models (logits are the per-class decision values);
* a ``Pipeline`` of affine scalers (``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``) followed by one of
  the above (the scaling is applied inside the module, so eps stays in raw input units).

Binary models have one decision value ``d``; their logits are ``[0, d]`` so that ``softmax`` equals a logistic
regression's ``predict_proba`` and ``argmax`` equals ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import validation
from advlab.models import Classifier

SVM_MULTICLASS = ("vote", "ovr", "sum")
"""How a multiclass kernel SVM's one-vs-one decision values become logits (see :class:`KernelSVM`)."""

KERNELS = ("linear", "rbf", "poly", "sigmoid")
"""SVC kernels re-implemented exactly (``precomputed`` and callables are not)."""


def _f64(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))


def kernel_matrix(
    z: torch.Tensor, sv: torch.Tensor, kernel: str, gamma: float = 1.0, coef0: float = 0.0, degree: int = 3
) -> torch.Tensor:
    """libsvm's kernel ``K(z_i, s_j)`` between rows ``z`` ``(N, D)`` and ``sv`` ``(S, D)``, shape ``(N, S)``.

    The kernels of :data:`KERNELS`, as scikit-learn's ``SVC`` computes them: ``linear`` ``z.s``, ``rbf``
    ``exp(-gamma |z - s|^2)``, ``poly`` ``(gamma z.s + coef0)^degree``, ``sigmoid`` ``tanh(gamma z.s + coef0)``.
    Differentiable in both arguments (poisoning attacks differentiate with respect to a training row).

    Args:
        z: inputs ``(N, D)``.
        sv: the other rows ``(S, D)`` (support vectors, or training rows).
        kernel: one of :data:`KERNELS`.
        gamma: the kernel coefficient (``SVC._gamma``; unused by ``linear``).
        coef0: the independent term of ``poly`` and ``sigmoid``.
        degree: the degree of ``poly``.

    Returns:
        The kernel matrix.

    Examples:
        >>> kernel_matrix(torch.zeros(2, 3), torch.ones(4, 3), "rbf", gamma=0.5).shape
        torch.Size([2, 4])
    """
    dot = z @ sv.T
    if kernel == "linear":
        return dot
    if kernel == "rbf":
        sq = (z * z).sum(1, keepdim=True) + (sv * sv).sum(1)[None] - 2 * dot
        return torch.exp(-gamma * sq.clamp_min(0.0))
    if kernel == "poly":
        return (gamma * dot + coef0) ** degree
    return torch.tanh(gamma * dot + coef0)  # sigmoid


def _binary_logits(d: torch.Tensor) -> torch.Tensor:
    """``(N,)`` decision values to ``(N, 2)`` logits ``[0, d]``."""
    return torch.stack([torch.zeros_like(d), d], dim=1)


class Affine(nn.Module):
    """``x * scale + offset`` feature-wise on flat inputs: the fitted affine scalers of a Pipeline."""

    scale: torch.Tensor
    offset: torch.Tensor

    def __init__(self, scale: np.ndarray, offset: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("scale", _f64(scale))
        self.register_buffer("offset", _f64(offset))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


class LinearDecision(nn.Module):
    """Decision values ``x @ weight.T + bias`` of a fitted linear classifier (float64 inside).

    Args:
        weight: ``coef_``, shape ``(K, D)`` (``K = 1`` for binary models).
        bias: ``intercept_``, shape ``(K,)``.
        preprocess: optional affine scaling applied to the flat input first.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, weight: np.ndarray, bias: np.ndarray, preprocess: nn.Module | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", _f64(weight))
        self.register_buffer("bias", _f64(bias).reshape(-1))
        self.preprocess = preprocess if preprocess is not None else nn.Identity()

    @property
    def binary(self) -> bool:
        return self.weight.shape[0] == 1

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """scikit-learn's ``decision_function``: ``(N,)`` for binary models, ``(N, K)`` otherwise (float64)."""
        z = self.preprocess(x.reshape(x.shape[0], -1).to(torch.float64))
        d = z @ self.weight.T + self.bias
        return d[:, 0] if self.binary else d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.decision_function(x)
        logits = _binary_logits(d) if self.binary else d
        return logits.to(x.dtype if x.is_floating_point() else torch.float32)


class KernelSVM(nn.Module):
    """Decision values of a fitted ``SVC``/``NuSVC`` rebuilt from its support vectors (float64 inside).

    For the pair of classes ``(i, j)``, ``i < j``, libsvm's decision value is
    ``d_ij(x) = sum_{s in SV_i} a^{(j-1)}_s K(s, x) + sum_{s in SV_j} a^{(i)}_s K(s, x) + b_ij`` (``a`` the rows
    of ``dual_coef_``, ``b`` = ``intercept_``);
    ``d_ij > 0`` is a vote for ``i``. ``predict`` counts votes (ties go to the lowest class index), which is
    piecewise constant (zero gradient). Three aggregations to logits (``multiclass``):

    * ``"vote"`` (default): ``votes_k + (K-1-k) / (2K) + w * c_k / (3 (|c_k| + 1))`` with ``c_k = sum_j d_kj``
      (signed so that positive favours ``k``) and ``w = 1 / (2K)``. The index term reproduces libsvm's tie
      break and is larger than the confidence term can ever be, so ``argmax`` equals ``predict`` exactly; the
      gradient comes from the confidence term (that of the summed pairwise decision values, rescaled).
    * ``"ovr"``: scikit-learn's ``decision_function_shape="ovr"`` values ``votes_k + c_k / (3 (|c_k| + 1))``
      exactly; argmax differs from ``predict`` only on vote ties (it picks the higher confidence, as
      ``break_ties=True`` does).
    * ``"sum"``: logits ``c_k``, smooth everywhere; argmax may differ from the vote near boundaries.

    :meth:`decision_function` always returns scikit-learn's ``decision_function`` (``"ovr"`` shape).

    Args:
        support_vectors: ``(S, D)``; dual_coef: ``(K-1, S)``; intercept: ``(K(K-1)/2,)``;
        n_support: support vectors per class ``(K,)``; kernel, gamma, coef0, degree: the kernel;
        multiclass: ``"vote"``, ``"ovr"`` or ``"sum"``; preprocess: optional affine scaling.
    """

    support_vectors: torch.Tensor
    dual_coef: torch.Tensor
    intercept: torch.Tensor

    def __init__(
        self,
        support_vectors: np.ndarray,
        dual_coef: np.ndarray,
        intercept: np.ndarray,
        n_support: Sequence[int],
        *,
        kernel: str,
        gamma: float,
        coef0: float = 0.0,
        degree: int = 3,
        multiclass: str = "vote",
        preprocess: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("support_vectors", _f64(support_vectors))
        self.register_buffer("dual_coef", _f64(dual_coef))
        self.register_buffer("intercept", _f64(intercept).reshape(-1))
        self.n_support = [int(n) for n in n_support]
        self.num_classes = len(self.n_support)
        self.kernel, self.gamma, self.coef0, self.degree = kernel, float(gamma), float(coef0), int(degree)
        self.multiclass = multiclass
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        starts = np.concatenate([[0], np.cumsum(self.n_support)])
        self._slices = [(int(starts[k]), int(starts[k + 1])) for k in range(self.num_classes)]
        self._pairs = [(i, j) for i in range(self.num_classes) for j in range(i + 1, self.num_classes)]

    def gram(self, z: torch.Tensor) -> torch.Tensor:
        """Kernel matrix ``K(x, s)`` between inputs ``(N, D)`` and support vectors, ``(N, S)``."""
        return kernel_matrix(z, self.support_vectors, self.kernel, self.gamma, self.coef0, self.degree)

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        """One-vs-one decision values ``(N, K(K-1)/2)`` in libsvm's pair order (sklearn ``"ovo"`` shape)."""
        k = self.gram(self.preprocess(x.reshape(x.shape[0], -1).to(torch.float64)))
        cols = []
        for p, (i, j) in enumerate(self._pairs):
            (a0, a1), (b0, b1) = self._slices[i], self._slices[j]
            d = k[:, a0:a1] @ self.dual_coef[j - 1, a0:a1] + k[:, b0:b1] @ self.dual_coef[i, b0:b1]
            cols.append(d + self.intercept[p])
        return torch.stack(cols, dim=1)

    def _votes_and_confidence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.pairwise(x)
        n, c = d.shape[0], self.num_classes
        conf = d.new_zeros(n, c)
        votes = d.new_zeros(n, c)
        for p, (i, j) in enumerate(self._pairs):
            conf[:, i] = conf[:, i] + d[:, p]
            conf[:, j] = conf[:, j] - d[:, p]
            win_i = (d[:, p] > 0).to(d.dtype).detach()  # libsvm: d > 0 votes i, otherwise j
            votes[:, i] += win_i
            votes[:, j] += 1 - win_i
        return votes, conf

    def _binary(self, x: torch.Tensor) -> torch.Tensor:
        k = self.gram(self.preprocess(x.reshape(x.shape[0], -1).to(torch.float64)))
        return k @ self.dual_coef[0] + self.intercept[0]

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """scikit-learn's ``decision_function`` (float64): ``(N,)`` for binary models, else the ``"ovr"`` shape."""
        if self.num_classes == 2:
            return self._binary(x)
        votes, conf = self._votes_and_confidence(x)
        return votes + conf / (3 * (conf.abs() + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 2:
            logits = _binary_logits(self._binary(x))
        else:
            votes, conf = self._votes_and_confidence(x)
            k = self.num_classes
            if self.multiclass == "sum":
                logits = conf
            elif self.multiclass == "ovr":
                logits = votes + conf / (3 * (conf.abs() + 1))
            else:
                tie_break = (k - 1 - torch.arange(k, dtype=conf.dtype, device=conf.device)) / (2 * k)
                logits = votes + tie_break + conf / (3 * (conf.abs() + 1)) / (2 * k)
        return logits.to(x.dtype if x.is_floating_point() else torch.float32)


# ---------------------------------------------------------------------- conversion
def _scaler(step: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, offset)`` with ``z = x * scale + offset`` for a fitted affine scaler, ``None`` otherwise."""
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    if isinstance(step, StandardScaler):
        n = step.n_features_in_
        scale = step.scale_ if step.scale_ is not None else np.ones(n)
        mean = step.mean_ if step.mean_ is not None else np.zeros(n)
        return 1.0 / scale, -mean / scale
    if isinstance(step, MinMaxScaler):
        return np.asarray(step.scale_), np.asarray(step.min_)
    if isinstance(step, MaxAbsScaler):
        return 1.0 / step.scale_, np.zeros_like(step.scale_)
    return None


def _supported() -> str:
    return (
        "LogisticRegression, LinearSVC, SGDClassifier, RidgeClassifier, Perceptron, SVC/NuSVC (kernel linear, rbf, "
        "poly, sigmoid), OneVsRestClassifier of these, or a Pipeline of StandardScaler/MinMaxScaler/MaxAbsScaler "
        "followed by one of these"
    )


def _module_for(estimator: Any, preprocess: nn.Module | None, svm_multiclass: str) -> nn.Module:
    from sklearn.linear_model._base import LinearClassifierMixin
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC, NuSVC

    if isinstance(estimator, (SVC, NuSVC)):
        if estimator.kernel not in KERNELS:
            raise TypeError(f"estimator: SVC kernel {estimator.kernel!r} is not supported; use one of {list(KERNELS)}")
        return KernelSVM(
            estimator.support_vectors_,
            estimator.dual_coef_,
            estimator.intercept_,
            estimator.n_support_,
            kernel=estimator.kernel,
            gamma=float(getattr(estimator, "_gamma", 0.0) or 0.0),
            coef0=estimator.coef0,
            degree=estimator.degree,
            multiclass=svm_multiclass,
            preprocess=preprocess,
        )
    if isinstance(estimator, LinearClassifierMixin) and hasattr(estimator, "coef_"):
        return LinearDecision(
            estimator.coef_, np.broadcast_to(estimator.intercept_, (estimator.coef_.shape[0],)), preprocess
        )
    if isinstance(estimator, OneVsRestClassifier):
        if len(estimator.classes_) == 2:
            return _module_for(estimator.estimators_[0], preprocess, svm_multiclass)
        parts = [_module_for(e, None, svm_multiclass) for e in estimator.estimators_]
        linear = [p for p in parts if isinstance(p, LinearDecision) and p.binary]
        if len(linear) != len(parts):
            raise TypeError("estimator: OneVsRestClassifier is supported around binary linear classifiers only")
        w = np.concatenate([p.weight.numpy() for p in linear])
        b = np.concatenate([p.bias.numpy() for p in linear])
        return LinearDecision(w, b, preprocess)
    raise TypeError(
        f"estimator: {type(estimator).__name__} has no exact differentiable re-implementation; supported: "
        f"{_supported()}. For decision trees and forests use advlab.nonneural.trees, for k-nearest neighbours "
        "advlab.nonneural.knn, or query it as a black box with advlab.blackbox.SklearnOracle."
    )


def from_sklearn(
    estimator: Any,
    input_shape: Sequence[int] | None = None,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    svm_multiclass: str = "vote",
) -> Classifier:
    """Wrap a fitted scikit-learn classifier as an exact, differentiable :class:`advlab.Classifier`.

    The returned classifier flattens its input, applies the estimator's decision function in float64 and
    returns logits (``[0, d]`` for binary models, per-class decision values otherwise), so white-box attacks
    (FGSM, PGD, C&W...) get exact input gradients. Logit ``k`` belongs to ``estimator.classes_[k]``; labels
    passed to attacks are class *indices* (identical when the classes are ``0..K-1``).

    Args:
        estimator: a fitted estimator (see the module docstring for the supported kinds).
        input_shape: per-example input shape, e.g. ``(1, 8, 8)``; its product must be ``n_features_in_``.
            Default ``(n_features_in_,)``.
        bounds: the valid input range of the returned classifier.
        svm_multiclass: for multiclass kernel SVMs, ``"vote"`` (argmax equals ``predict`` exactly), ``"ovr"``
            (scikit-learn's ``decision_function`` exactly) or ``"sum"`` (summed pairwise decision values,
            smooth); see :class:`KernelSVM`.

    Returns:
        Classifier in eval mode with ``num_classes``, ``input_shape`` and a card holding the estimator's type,
        parameters and ``classes_``. Its module has ``decision_function(x)`` matching scikit-learn's.

    Raises:
        TypeError: the estimator is not a supported kind (the message says where to go instead).
        ValueError: the estimator is not fitted, or ``input_shape`` does not match ``n_features_in_``.

    Examples:
        >>> lr = LogisticRegression(max_iter=1000).fit(x_train.reshape(len(x_train), -1), y_train)
        >>> clf = from_sklearn(lr, input_shape=(1, 8, 8))
        >>> result = advlab.attacks.pgd(clf, x_test, y_test, ThreatModel("linf", 0.1))
    """
    from sklearn.pipeline import Pipeline

    validation.check_fitted_estimator("estimator", estimator)
    validation.check_choice("svm_multiclass", svm_multiclass, SVM_MULTICLASS)
    validation.check_threat_args("linf", 0.0, bounds)
    final = estimator
    preprocess: nn.Module | None = None
    if isinstance(estimator, Pipeline):
        steps = [s for _, s in estimator.steps if s not in (None, "passthrough")]
        scale = np.ones(estimator.n_features_in_)
        offset = np.zeros(estimator.n_features_in_)
        for step in steps[:-1]:
            aff = _scaler(step)
            if aff is None:
                raise TypeError(
                    f"estimator: Pipeline step {type(step).__name__} is not supported; only affine scalers "
                    f"(StandardScaler, MinMaxScaler, MaxAbsScaler) may precede the classifier. Supported: {_supported()}"
                )
            scale, offset = scale * aff[0], offset * aff[0] + aff[1]
        preprocess = Affine(scale, offset)
        final = steps[-1]
    n_features = int(estimator.n_features_in_)
    shape = (n_features,) if input_shape is None else tuple(int(s) for s in input_shape)
    validation.check_feature_count("input_shape", shape, n_features)
    module = _module_for(final, preprocess, svm_multiclass)
    classes = np.asarray(final.classes_)
    card = {
        "source": "scikit-learn",
        "estimator": type(estimator).__name__,
        "classifier": type(final).__name__,
        "classes": classes.tolist(),
        "params": {k: v for k, v in final.get_params(deep=False).items() if isinstance(v, (int, float, str, bool))},
    }
    clf = Classifier(module, bounds=bounds, num_classes=len(classes), input_shape=shape, card=card)
    clf.eval()
    return clf
