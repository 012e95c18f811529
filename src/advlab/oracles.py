"""Oracles: targets that only answer queries (labels or scores), counting every example evaluated against a budget.

An :class:`Oracle` is what a black-box attacker sees: ``predict(x)`` returns labels, ``scores(x)`` returns
class probabilities (only in ``"scores"`` mode), and each example evaluated costs one query. A budget, when
set, is checked *before* a batch is evaluated: a batch that would exceed it raises :class:`BudgetExceeded`
and nothing of it is evaluated. :func:`as_module` turns an oracle into a ``torch.nn.Module`` so query attacks go
through :func:`advlab.attacks.run_attack` like every other attack.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import validation
from advlab.models import Classifier, as_classifier
from advlab.passes import PassCounter

log = logging.getLogger(__name__)

MODES = ("labels", "scores")
"""What an oracle reveals: only the predicted label, or the full vector of class probabilities."""

LABEL_MARGIN = 1.0e4
"""Gap between the predicted class and the others in the pseudo log-probabilities of a labels-only oracle."""


class BudgetExceeded(RuntimeError):
    """A batch would take an oracle past its query budget; raised before anything of the batch is evaluated.

    Attributes:
        spent: queries spent before the refused batch.
        budget: the oracle's budget (``None`` when the limit was set by a remote server whose limit is unknown).
        requested: queries the refused batch asked for.
    """

    def __init__(self, spent: int, budget: int | None, requested: int = 0, message: str | None = None) -> None:
        self.spent = int(spent)
        self.budget = None if budget is None else int(budget)
        self.requested = int(requested)
        if message is None:
            message = (
                f"query budget exhausted: {self.spent} of {self.budget} queries spent, a batch of "
                f"{self.requested} more was refused. Raise the oracle's budget or lower the attack's settings."
            )
        super().__init__(message)


class OracleUnavailable(ConnectionError):
    """The target could not be reached (connection refused, timeout, repeated server errors) after retries."""


class OracleResponseError(ValueError):
    """The target answered something that is not a valid prediction (not JSON, wrong keys, wrong length)."""


def check_mode(mode: Any) -> str:
    """``mode`` is ``"labels"`` or ``"scores"``."""
    validation.check_choice("mode", mode, MODES, "'labels' reveals only the top class; 'scores' the probabilities.")
    return str(mode)


def check_budget(budget: Any) -> int | None:
    """``budget`` is ``None`` (unlimited) or a positive int."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget: expected a positive int or None (unlimited), got {type(budget).__name__} {budget!r}")
    if int(budget) <= 0:
        raise ValueError(
            f"budget: expected a positive number of queries or None for unlimited, got {int(budget)}. "
            "A budget of 0 would refuse every query."
        )
    return int(budget)


class Oracle(abc.ABC):
    """A target that only answers queries; subclasses implement :meth:`_labels` and :meth:`_scores`.

    Attributes:
        mode: ``"labels"`` (only the predicted class is revealed) or ``"scores"`` (class probabilities).
        num_classes: number of classes.
        input_shape: per-example input shape, or ``None`` when the target accepts any.
        bounds: valid input range; queries outside it are refused with ``ValueError``.
        budget: maximum total number of examples evaluated, ``None`` for unlimited.
        queries: examples evaluated so far (each example of a batch costs one query).

    Examples:
        >>> oracle = TorchOracle(model, mode="labels", budget=10_000)
        >>> labels = oracle.predict(x)          # costs x.shape[0] queries
        >>> oracle.remaining()
    """

    mode: str
    num_classes: int
    input_shape: tuple[int, ...] | None
    bounds: tuple[float, float]
    budget: int | None
    queries: int

    def __init__(
        self,
        mode: str,
        num_classes: int | None,
        *,
        budget: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.mode = check_mode(mode)
        self.budget = check_budget(budget)
        if num_classes is not None:
            num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        self.num_classes = num_classes  # type: ignore[assignment]
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
        validation.check_threat_args("linf", 0.0, bounds)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.queries = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public API
    def remaining(self) -> int | None:
        """Queries left before the budget is exhausted (``None`` when unlimited)."""
        return None if self.budget is None else max(0, self.budget - self.queries)

    def predict(self, x: Any) -> torch.Tensor:
        """Predicted labels, shape ``(N,)`` int64; costs ``N`` queries.

        Raises:
            BudgetExceeded: when the batch would exceed the budget (nothing is evaluated).
            ValueError: when ``x`` is not a finite batch inside the bounds with the oracle's input shape.
        """
        x_t = self._check(x)
        self._charge(x_t.shape[0])
        try:
            return self._labels(x_t).to(torch.int64).cpu()
        except BaseException:
            self._refund(x_t.shape[0])
            raise

    def scores(self, x: Any) -> torch.Tensor:
        """Class probabilities, shape ``(N, num_classes)`` float32; costs ``N`` queries (``"scores"`` mode only).

        Raises:
            RuntimeError: in ``"labels"`` mode (the target reveals only labels).
            BudgetExceeded: when the batch would exceed the budget (nothing is evaluated).
        """
        if self.mode != "scores":
            raise RuntimeError(
                f"{type(self).__name__}.scores: this oracle is in 'labels' mode and reveals only the predicted "
                "class. Use predict(), a decision-based attack (boundary, hopskipjump), or create the oracle "
                "with mode='scores' if the target really gives probabilities."
            )
        x_t = self._check(x)
        self._charge(x_t.shape[0])
        try:
            return self._scores(x_t).float().cpu()
        except BaseException:
            self._refund(x_t.shape[0])
            raise

    def reset(self) -> None:
        """Set the query counter back to zero (the budget is unchanged)."""
        self.queries = 0

    def describe(self) -> dict[str, Any]:
        """What identifies this target, JSON-ready and free of credentials: its kind, mode, input shape and
        bounds (remote oracles add their address, protocol and model). Evaluations key their checkpoint on it.

        Examples:
            >>> TorchOracle(model, mode="labels").describe()["mode"]
            'labels'
        """
        return {
            "oracle": type(self).__name__,
            "mode": self.mode,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "bounds": list(self.bounds),
        }

    # ------------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        """Labels for a validated batch (no budget accounting)."""

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for a validated batch (no budget accounting)."""
        raise NotImplementedError

    def _check(self, x: Any) -> torch.Tensor:
        x_t = validation.as_tensor("x", x, float32="all")
        validation.check_input(x_t, self.bounds)
        validation.check_input_shape(x_t, self.input_shape)
        return x_t

    def _charge(self, n: int) -> None:
        with self._lock:
            if self.budget is not None and self.queries + n > self.budget:
                raise BudgetExceeded(self.queries, self.budget, n)
            self.queries += n

    def _refund(self, n: int) -> None:
        """Give back the queries of a batch that failed before it was answered."""
        with self._lock:
            self.queries = max(0, self.queries - n)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mode={self.mode!r}, num_classes={self.num_classes}, "
            f"queries={self.queries}, budget={self.budget})"
        )


class TorchOracle(Oracle):
    """A local ``torch.nn.Module`` or :class:`~advlab.models.Classifier` seen only through its answers.

    Args:
        model: a module returning logits (wrapped in a ``Classifier`` when it is not one).
        mode: ``"scores"`` (softmax probabilities) or ``"labels"``.
        budget: maximum number of examples evaluated, ``None`` for unlimited.
        batch_size: examples per forward pass.
        num_classes: number of classes; taken from the ``Classifier`` or the last ``Linear`` layer when omitted.
        input_shape: per-example shape; taken from the ``Classifier`` when omitted.
        bounds: valid input range; taken from the ``Classifier`` when omitted.

    Examples:
        >>> oracle = TorchOracle(model, mode="labels", budget=5000)
        >>> oracle.predict(x[:10]); oracle.queries
        10
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str = "scores",
        budget: int | None = None,
        batch_size: int = 512,
        *,
        num_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        clf = as_classifier(model, bounds)
        if num_classes is None:
            num_classes = clf.num_classes if clf.num_classes is not None else _last_linear_width(clf)
        super().__init__(
            mode,
            num_classes,
            budget=budget,
            input_shape=input_shape if input_shape is not None else clf.input_shape,
            bounds=bounds if bounds is not None else clf.bounds,
        )
        self.model = clf
        self.batch_size = validation.check_int("batch_size", batch_size, minimum=1)
        if clf.module.training and not clf.fixed_mode:  # an export keeps the mode it was exported in
            validation.warn(
                "model is in train mode; the oracle evaluates it in eval mode (dropout off, batch-norm running "
                "statistics). Call model.eval() first to silence this warning.",
            )

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        dev = self.model.device
        out = []
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            with torch.no_grad():
                for i in range(0, x.shape[0], self.batch_size):
                    out.append(self.model(x[i : i + self.batch_size].to(dev)))
        finally:
            for m, mode in modes:
                m.training = mode
        logits = torch.cat(out)
        validation.check_model_output(logits, x.shape[0])
        if self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        return logits

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(x).argmax(1)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self._logits(x).float(), dim=1)


def _last_linear_width(model: nn.Module) -> int | None:
    width = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            width = m.out_features
    return width if width is not None and width >= 2 else None


class SklearnOracle(Oracle):
    """A fitted scikit-learn classifier seen only through ``predict`` / ``predict_proba``.

    Inputs are flattened to ``(N, features)`` before they reach the estimator. Labels are indices into
    ``estimator.classes_`` (so a model fitted on labels ``0..C-1`` returns those labels).

    Args:
        estimator: a fitted scikit-learn classifier.
        mode: ``"labels"`` (``predict``) or ``"scores"`` (``predict_proba``, which the estimator must have).
        budget: maximum number of examples evaluated, ``None`` for unlimited.
        input_shape: per-example shape attacks see (e.g. ``(1, 8, 8)``); default ``(n_features_in_,)``.
        bounds: valid input range.

    Raises:
        ValueError: when the estimator is not fitted, lacks ``predict_proba`` in scores mode, or
            ``input_shape`` does not match its feature count.

    Examples:
        >>> oracle = SklearnOracle(LogisticRegression().fit(X, y), mode="scores", input_shape=(1, 8, 8))
    """

    def __init__(
        self,
        estimator: Any,
        mode: str = "labels",
        budget: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        if not hasattr(estimator, "predict"):
            raise TypeError(
                f"estimator: expected a scikit-learn classifier with predict(), got {type(estimator).__name__}"
            )
        try:
            check_is_fitted(estimator)
        except NotFittedError as exc:
            raise ValueError(
                f"estimator: {type(estimator).__name__} is not fitted yet; call estimator.fit(X, y) before "
                "wrapping it in an oracle"
            ) from exc
        mode = check_mode(mode)
        if mode == "scores" and not hasattr(estimator, "predict_proba"):
            raise ValueError(
                f"mode: 'scores' needs predict_proba, which {type(estimator).__name__} does not have "
                "(for SVC pass probability=True); use mode='labels'"
            )
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ValueError(f"estimator: {type(estimator).__name__} has no classes_; it is not a classifier")
        self.classes_ = np.asarray(classes)
        n_features = getattr(estimator, "n_features_in_", None)
        if input_shape is None and n_features is not None:
            input_shape = (int(n_features),)
        if input_shape is not None and n_features is not None and int(np.prod(input_shape)) != int(n_features):
            raise ValueError(
                f"input_shape: {tuple(input_shape)} has {int(np.prod(input_shape))} features but the estimator "
                f"was fitted on {int(n_features)}; give a shape whose product is {int(n_features)}"
            )
        super().__init__(mode, len(self.classes_), budget=budget, input_shape=input_shape, bounds=bounds)
        self.estimator = estimator
        self.n_features = None if n_features is None else int(n_features)

    def flatten(self, x: torch.Tensor) -> np.ndarray:
        flat = x.detach().cpu().reshape(x.shape[0], -1).numpy()
        if self.n_features is not None and flat.shape[1] != self.n_features:
            raise ValueError(
                f"x: {flat.shape[1]} features per example but the estimator expects {self.n_features}; "
                f"reshape the inputs to (N, {self.n_features})"
            )
        return flat

    def _check(self, x: Any) -> torch.Tensor:
        x_t = validation.as_tensor("x", x, float32="all")
        validation.check_input(x_t, self.bounds)
        if self.input_shape is not None and tuple(x_t.shape[1:]) != self.input_shape:
            if int(np.prod(x_t.shape[1:])) == int(np.prod(self.input_shape)):
                return x_t  # same features in another layout: the estimator sees them flattened anyway
            validation.check_input_shape(x_t, self.input_shape)
        return x_t

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        pred = np.asarray(self.estimator.predict(self.flatten(x)))
        idx = np.searchsorted(self.classes_, pred) if _is_sorted(self.classes_) else _index_of(self.classes_, pred)
        return torch.from_numpy(np.asarray(idx, dtype=np.int64))

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.estimator.predict_proba(self.flatten(x)), dtype=np.float32))


def _is_sorted(a: np.ndarray) -> bool:
    try:
        return bool(np.all(a[:-1] <= a[1:]))
    except TypeError:
        return False


def _index_of(classes: np.ndarray, pred: np.ndarray) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    return np.array([lookup[p] for p in pred.tolist()], dtype=np.int64)


class CallableOracle(Oracle):
    """Any Python callable ``fn(x) -> labels or scores`` as an oracle.

    Args:
        fn: called with a batch (numpy ``float32`` array when ``array="numpy"``, a CPU tensor when
            ``array="torch"``); returns labels ``(N,)`` in ``"labels"`` mode or probabilities ``(N, C)`` in
            ``"scores"`` mode.
        mode: ``"labels"`` or ``"scores"``.
        num_classes: number of classes.
        budget: maximum number of examples evaluated, ``None`` for unlimited.
        input_shape: per-example input shape, checked on every query when given.
        bounds: valid input range.
        array: what ``fn`` receives, ``"numpy"`` or ``"torch"``.

    Raises:
        OracleResponseError: when ``fn`` returns something of the wrong shape or with labels out of range.

    Examples:
        >>> oracle = CallableOracle(lambda x: clf.predict(x.reshape(len(x), -1)), "labels", num_classes=10)
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        mode: str,
        num_classes: int,
        budget: int | None = None,
        *,
        input_shape: tuple[int, ...] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        array: str = "numpy",
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable x -> labels or scores, got {type(fn).__name__}")
        validation.check_choice("array", array, ("numpy", "torch"))
        super().__init__(
            mode,
            validation.check_int("num_classes", num_classes, minimum=2),
            budget=budget,
            input_shape=input_shape,
            bounds=bounds,
        )
        self.fn = fn
        self.array = array

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        arg = x.detach().cpu().numpy() if self.array == "numpy" else x.detach().cpu()
        out = self.fn(arg)
        if isinstance(out, torch.Tensor):
            return out.detach().cpu()
        try:
            return torch.as_tensor(np.asarray(out))
        except (TypeError, ValueError) as exc:
            raise OracleResponseError(f"fn: returned {type(out).__name__}, which is not an array") from exc

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "scores":
            return self._scores(x).argmax(1)
        return check_labels_answer(self._call(x), x.shape[0], self.num_classes, "fn")

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        return check_scores_answer(self._call(x), x.shape[0], self.num_classes, "fn")


def check_labels_answer(labels: torch.Tensor, n: int, num_classes: int | None, source: str) -> torch.Tensor:
    """An answer of ``n`` integer labels in ``[0, num_classes)``, or :class:`OracleResponseError`."""
    if labels.dim() != 1 or labels.shape[0] != n:
        raise OracleResponseError(f"{source}: expected {n} labels, got an answer of shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        if not bool((labels == labels.round()).all()):
            raise OracleResponseError(f"{source}: expected integer labels, got non-integer values")
    elif labels.dtype == torch.bool:
        raise OracleResponseError(f"{source}: expected integer labels, got booleans")
    labels = labels.to(torch.int64)
    if n and (int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)):
        raise OracleResponseError(
            f"{source}: labels out of range [0, {num_classes}): got {int(labels.min())}..{int(labels.max())}"
        )
    return labels


def check_scores_answer(scores: torch.Tensor, n: int, num_classes: int | None, source: str) -> torch.Tensor:
    """An answer of shape ``(n, num_classes)`` of finite numbers, or :class:`OracleResponseError`."""
    if scores.dim() != 2 or scores.shape[0] != n or (num_classes is not None and scores.shape[1] != num_classes):
        raise OracleResponseError(f"{source}: expected scores of shape ({n}, {num_classes}), got {tuple(scores.shape)}")
    if not scores.dtype.is_floating_point:
        scores = scores.float()
    if not bool(torch.isfinite(scores).all()):
        raise OracleResponseError(f"{source}: scores contain NaN or inf")
    return scores.float()


# ---------------------------------------------------------------------- adapter to nn.Module
class _NoGradient(torch.autograd.Function):
    """Identity in the forward pass; a clear error in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError(
            "an Oracle has no gradient: gradient attacks (fgsm, pgd, ...) on as_module(oracle) are meaningless. "
            "Use a query attack (spsa, nes, boundary, hopskipjump) or a transfer attack from a substitute model."
        )


class OracleModule(nn.Module):
    """``torch.nn.Module`` view of an :class:`Oracle`: log-probabilities (scores mode) or, in labels mode,
    pseudo log-probabilities that are 0 for the predicted class and ``-LABEL_MARGIN`` elsewhere.

    Remembers the answer to the last batch, so asking twice for the same inputs (the framework's clean pass,
    a least-likely goal, the attack's own first look) costs the queries once. The output has no gradient:
    backpropagating through it raises ``RuntimeError``.

    While :attr:`pass_counter` holds a :class:`~advlab.passes.PassCounter`, every query sent counts as a forward
    pass (an answer from the cache costs none); there is no backward pass.
    """

    def __init__(self, oracle: Oracle) -> None:
        super().__init__()
        if not isinstance(oracle, Oracle):
            raise TypeError(f"oracle: expected an advlab.blackbox.Oracle, got {type(oracle).__name__}")
        self.oracle = oracle
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pass_counter: PassCounter | None = None

    def cached(self, x: torch.Tensor) -> torch.Tensor | None:
        """The answer for ``x`` if it is the last batch asked for, else ``None`` (costs nothing)."""
        if self._last is None:
            return None
        last_x, last_out = self._last
        if last_x.shape == x.shape and torch.equal(last_x, x.detach().cpu()):
            return last_out.to(x.device)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cached(x)
        if out is None:
            out = self.answer(x)
            self._last = (x.detach().cpu().clone(), out.detach().cpu())
        return _NoGradient.apply(x, out) if torch.is_grad_enabled() and x.requires_grad else out

    def answer(self, x: torch.Tensor) -> torch.Tensor:
        """Query the oracle (costs ``N``) and return (pseudo) log-probabilities on ``x``'s device."""
        x_cpu = x.detach().cpu()
        if self.oracle.mode == "scores":
            out = torch.log(self.oracle.scores(x_cpu).clamp_min(1e-30))
        else:
            labels = self.oracle.predict(x_cpu)
            k = self.oracle.num_classes or int(labels.max()) + 1
            out = torch.full((x.shape[0], k), -LABEL_MARGIN)
            out[torch.arange(x.shape[0]), labels] = 0.0
        if self.pass_counter is not None:
            self.pass_counter.count(x.shape[0])
        return out.to(x.device)

    def extra_repr(self) -> str:
        return repr(self.oracle)


def as_module(oracle: Oracle) -> Classifier:
    """Wrap an oracle as a :class:`~advlab.models.Classifier` so attacks can go through ``run_attack``.

    The forward pass returns log-probabilities in ``"scores"`` mode and, in ``"labels"`` mode, a one-hot of the
    predicted class with a large margin (0 for the label, ``-1e4`` elsewhere). Every forward pass costs
    queries on the oracle. There is no gradient: a gradient attack on the result raises ``RuntimeError`` at its
    first backward pass, because gradients of an oracle are meaningless.

    Args:
        oracle: any :class:`Oracle`.

    Returns:
        A ``Classifier`` with the oracle's bounds, number of classes and input shape.

    Examples:
        >>> model = as_module(TorchOracle(net, mode="labels", budget=20_000))
        >>> result = hopskipjump(model, x, y, ThreatModel("l2", 2.0))
    """
    clf = Classifier(
        OracleModule(oracle), bounds=oracle.bounds, num_classes=oracle.num_classes, input_shape=oracle.input_shape
    )
    return clf.eval()


def find_oracle(model: nn.Module) -> OracleModule | None:
    """The :class:`OracleModule` inside ``model`` (a ``Classifier`` from :func:`as_module`), if any."""
    inner = model.module if isinstance(model, Classifier) else model
    return inner if isinstance(inner, OracleModule) else None
