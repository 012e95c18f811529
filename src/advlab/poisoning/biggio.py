"""Poisoning attacks against support vector machines (Biggio, Nelson & Laskov, ICML 2012).

The attacker inserts a point ``x_c`` with a flipped label into the training set of a binary SVM and moves it,
by gradient ascent, to where the retrained SVM has the largest hinge loss on a validation set the attacker
holds: ``max_{x_c} L(x_c) = sum_k max(0, 1 - y_k f_{x_c}(x_k))``, ``f_{x_c}`` the SVM trained on
``D_tr + {(x_c, y_c)}``. Points are inserted one after another, each optimised with the earlier ones in place
(the paper's multi-point attack).

The gradient of ``L`` goes through the retrained SVM's optimality (KKT) conditions, as in the paper: with the
sets of margin support vectors ``S`` (``0 < a < C``) and error vectors ``E`` (``a = C``) held fixed, the duals
``a_S`` and the bias ``b`` solve the linear system

    ``[[Q_SS, y_S], [y_S^T, 0]] [a_S; b] = [1 - y_S * K_SE (C y_E); -C sum(y_E)]``,   ``Q_SS = y_S y_S^T K_SS``

(margin points sit on the margin, ``sum a_i y_i = 0``), whose entries depend on ``x_c`` through its kernel
row. Solving it in torch and back-propagating differentiates ``L`` through ``a_S(x_c)`` and ``b(x_c)``
exactly for fixed sets — the paper's equations (10)-(11), except that an attack point that is itself a margin
support vector also has its ``a_c`` follow ``x_c`` (the paper holds ``a_c`` fixed). The SVM is retrained with
scikit-learn's ``SVC`` after every step, so the sets are those of the exact retrained model, and the loss is
measured on it through advlab's exact torch re-implementation (:func:`advlab.nonneural.from_sklearn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from advlab import validation
from advlab.nonneural.sklearn_models import from_sklearn, kernel_matrix
from advlab.poisoning.base import PoisonedData, generator_of

KERNELS = ("linear", "rbf")
"""The kernels of the paper (the derivation holds for any differentiable kernel; these two are tested)."""
BOUND_TOLERANCE = 1e-8
"""A dual ``a`` within this share of ``C`` of 0 or ``C`` counts as at the bound (libsvm clips exactly)."""


@dataclass(frozen=True)
class SVMSettings:
    """The SVM the victim trains: ``SVC(kernel, C, gamma)`` with ``gamma`` fixed as a number.

    Attributes:
        kernel: ``"linear"`` or ``"rbf"``.
        C: the soft-margin constant.
        gamma: the RBF coefficient (ignored by the linear kernel).
    """

    kernel: str
    C: float
    gamma: float

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        """scikit-learn's ``SVC`` trained on flat rows ``x`` and labels ``y`` (exact retraining)."""
        from sklearn.svm import SVC

        svc = SVC(kernel=self.kernel, C=self.C, gamma=self.gamma, tol=1e-6)
        return svc.fit(x.numpy(), y.numpy())

    def kernel_rows(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``K(a_i, b_j)`` through advlab's re-implementation of libsvm's kernels."""
        return kernel_matrix(a, b, self.kernel, self.gamma)


def hinge_loss(svc: Any, x: torch.Tensor, signs: torch.Tensor) -> float:
    """Summed hinge loss ``sum_k max(0, 1 - y_k f(x_k))`` of a fitted binary ``SVC`` (labels as +-1).

    ``f`` is read through :func:`advlab.nonneural.from_sklearn`, advlab's exact torch re-implementation.

    Args:
        svc: a fitted binary ``SVC``.
        x: flat inputs ``(N, D)``.
        signs: ``+1`` for ``svc.classes_[1]``, ``-1`` for ``svc.classes_[0]``.

    Returns:
        The loss.
    """
    with torch.no_grad():
        decision = from_sklearn(svc)(x.to(torch.float64))[:, 1]
    return float((1 - signs * decision).clamp_min(0).sum())


def kkt_gradient(
    svc: Any, svm: SVMSettings, x: torch.Tensor, signs: torch.Tensor, x_val: torch.Tensor, val_signs: torch.Tensor
) -> torch.Tensor:
    """Gradient of the validation hinge loss with respect to the last training row, through the KKT conditions.

    The margin support vectors ``S`` and error vectors ``E`` of the fitted ``svc`` are held fixed; ``a_S`` and
    ``b`` are solved from the KKT system (module docstring) as functions of the last row, and autograd
    differentiates the validation loss through that solve.

    Args:
        svc: the ``SVC`` trained on ``x`` (its ``support_`` index rows of ``x``).
        svm: its settings.
        x: the flat training rows ``(N, D)``, float64; the last row is the attack point.
        signs: training labels as +-1 (``+1`` for ``svc.classes_[1]``).
        x_val: flat validation rows, float64.
        val_signs: validation labels as +-1.

    Returns:
        ``dL/dx_c``, shape ``(D,)``.
    """
    alpha = torch.zeros(x.shape[0], dtype=torch.float64)
    alpha[torch.as_tensor(svc.support_)] = torch.as_tensor(svc.dual_coef_[0]).abs()
    at_bound = alpha >= svm.C * (1 - BOUND_TOLERANCE)
    margin = (alpha > svm.C * BOUND_TOLERANCE) & ~at_bound
    attack = x[-1].clone().requires_grad_(True)
    rows = torch.cat([x[:-1], attack[None]])
    ys, ye = signs[margin], signs[at_bound] * svm.C
    fixed = svm.kernel_rows(rows[margin], rows[at_bound]) @ ye
    if bool(margin.any()):
        q = ys[:, None] * ys[None, :] * svm.kernel_rows(rows[margin], rows[margin])
        q = q + torch.eye(q.shape[0], dtype=q.dtype) * 1e-10 * float(q.detach().diagonal().abs().mean().clamp_min(1))
        top = torch.cat([q, ys[:, None]], dim=1)
        system = torch.cat([top, torch.cat([ys, ys.new_zeros(1)])[None]])
        rhs = torch.cat([1 - ys * fixed, -ye.sum()[None]])
        solution = torch.linalg.solve(system, rhs)
        duals, bias = solution[:-1] * ys, solution[-1]
    else:
        duals, bias = ys, torch.as_tensor(float(svc.intercept_[0]), dtype=torch.float64)
    decision = svm.kernel_rows(x_val, rows[margin]) @ duals + svm.kernel_rows(x_val, rows[at_bound]) @ ye + bias
    loss = (1 - val_signs * decision).clamp_min(0).sum()
    (grad,) = torch.autograd.grad(loss, attack, allow_unused=True)
    return grad if grad is not None else torch.zeros_like(attack)


@dataclass(frozen=True)
class _Ascent:
    """Gradient ascent of one attack point (the paper's Algorithm 1), retraining the SVM after every step.

    ``x``/``signs`` are the training rows and +-1 labels the point joins (clean rows and earlier points).
    """

    svm: SVMSettings
    x: torch.Tensor
    signs: torch.Tensor
    x_val: torch.Tensor
    val_signs: torch.Tensor
    bounds: tuple[float, float]

    def evaluate(self, point: torch.Tensor, labels: torch.Tensor) -> tuple[Any, torch.Tensor, float]:
        """Retrain with ``point`` appended; the SVM, the training rows, and its validation hinge loss."""
        rows = torch.cat([self.x, point[None]])
        svc = self.svm.fit(rows, (labels > 0).to(torch.int64))
        return svc, rows, hinge_loss(svc, self.x_val, self.val_signs)

    def run(
        self, point: torch.Tensor, label: float, steps: int, step_size: float, tol: float
    ) -> tuple[torch.Tensor, list[float]]:
        """Move ``point`` (label ``label``, +-1) up the validation hinge loss; returns ``(point, losses)``.

        A step along the normalised gradient that does not increase the loss is retried at half the length
        from the same point (the loss never decreases); the ascent stops after ``steps`` gradient steps, when
        an accepted step gains less than ``tol``, or when the step has shrunk a thousandfold.
        """
        labels = torch.cat([self.signs, torch.tensor([label], dtype=torch.float64)])
        svc, rows, loss = self.evaluate(point, labels)
        losses, size = [loss], step_size
        for _ in range(steps):
            grad = kkt_gradient(svc, self.svm, rows, labels, self.x_val, self.val_signs)
            norm = float(grad.norm())
            if norm == 0.0 or size < step_size * 1e-3:
                break
            candidate = (point + size * grad / norm).clamp(*self.bounds)
            new_svc, new_rows, new_loss = self.evaluate(candidate, labels)
            if new_loss <= loss:
                size /= 2
                continue
            gain = new_loss - loss
            point, svc, rows, loss = candidate, new_svc, new_rows, new_loss
            losses.append(loss)
            if gain < tol:
                break
        return point, losses


def _check_binary(y: torch.Tensor, name: str) -> tuple[int, int]:
    classes = torch.unique(y).tolist()
    if len(classes) != 2:
        raise ValueError(
            f"{name}: the SVM poisoning attack of Biggio et al. attacks a binary SVM; the labels hold "
            f"{len(classes)} classes {classes[:10]}; keep the rows of two classes (for example 7 and 1)"
        )
    return int(classes[0]), int(classes[1])


def _check_val(x_val: torch.Tensor, y_val: torch.Tensor, x: torch.Tensor, classes: tuple[int, int]) -> None:
    if tuple(x_val.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"val x: inputs of shape {tuple(x_val.shape[1:])}, but the training inputs have {tuple(x.shape[1:])}"
        )
    if not bool(torch.isin(y_val, torch.tensor(classes)).all()):
        raise ValueError(f"val y: labels must be the training classes {list(classes)}")


def _check_settings(kernel: str, C: float, gamma: float | None, n_points: int, steps: int) -> None:
    validation.check_choice("kernel", kernel, KERNELS)
    validation.check_float("C", C, minimum=0.0, strict_min=True)
    if gamma is not None:
        validation.check_float("gamma", gamma, minimum=0.0, strict_min=True)
    validation.check_int("n_points", n_points, minimum=1)
    validation.check_int("steps", steps, minimum=0)


def biggio_svm(
    train: Any,
    val: Any,
    *,
    n_points: int = 1,
    kernel: str = "linear",
    C: float = 1.0,
    gamma: float | None = None,
    label: int | None = None,
    steps: int = 100,
    step_size: float = 0.5,
    tol: float = 1e-6,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int | None = 0,
) -> PoisonedData:
    """Insert ``n_points`` attack points that maximise a binary SVM's validation hinge loss (Biggio et al. 2012).

    Each point starts as a copy of a random training row of the attacked class with the *other* class's label
    (the paper's initialisation: "cloning an arbitrary point from the attacked class and flipping its label")
    and climbs the validation hinge loss of the retrained SVM along the KKT gradient (module docstring),
    inside the box ``bounds``; points are optimised one after another, each with the earlier ones inserted.
    ``steps=0`` gives the random flipped-label points the ascent starts from (the paper's baseline).

    Args:
        train: the clean training set (a pair ``(x, y)``, a Dataset...) of exactly two classes; inputs of any
            shape, flattened for the SVM.
        val: the attacker's validation set (same two classes), whose hinge loss the points maximise.
        n_points: how many attack points to insert.
        kernel: ``"linear"`` or ``"rbf"`` (the paper's two).
        C: the SVM's soft-margin constant (the paper: 1).
        gamma: the RBF coefficient; None for scikit-learn's ``"scale"`` rule on the clean training inputs
            (the paper's 2-D example uses 0.5).
        label: the class the inserted points carry (their starts are rows of the other class); None picks a
            random class for each point.
        steps: gradient steps per point.
        step_size: length of a step along the normalised gradient, in input units (halved when a step fails).
        tol: stop a point's ascent when an accepted step gains less than this (the paper's epsilon).
        bounds: the input box the points stay inside (the paper: ``[0, 1]`` pixels).
        seed: seed of the starting rows and random labels.

    Returns:
        The clean training set with the points appended (``inserted = n_points``; original labels -1);
        ``extra["validation_loss"]`` holds the validation hinge loss after each point (first entry: clean).

    Raises:
        ValueError: data that is not binary, a ``label`` that is not one of its classes, inputs outside
            ``bounds``, or a setting out of range.

    Examples:
        >>> poisoned = biggio_svm((x_train, y_train), (x_val, y_val), n_points=3, kernel="linear")
        >>> SVC(kernel="linear").fit(poisoned.x.flatten(1), poisoned.y)
    """
    x, y = validation.as_xy(train, "train")
    x_val, y_val = validation.as_xy(val, "val")
    _check_settings(kernel, C, gamma, n_points, steps)
    validation.check_float("step_size", step_size, minimum=0.0, strict_min=True)
    validation.check_float("tol", tol, minimum=0.0)
    low, high = validation.check_bounds("bounds", bounds)
    classes = _check_binary(y, "train y")
    _check_val(x_val, y_val, x, classes)
    if label is not None and label not in classes:
        raise ValueError(f"label: expected one of the training classes {list(classes)}, got {label!r}")
    validation.check_input(x, (low, high), name="train x")
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    gamma = float(1.0 / (flat.shape[1] * flat.var())) if gamma is None else float(gamma)
    svm = SVMSettings(kernel, float(C), gamma)
    val_flat, val_signs = x_val.reshape(x_val.shape[0], -1).to(torch.float64), _signs(y_val, classes)
    generator = generator_of(seed)
    rows, signs = flat, _signs(y, classes)
    losses = [hinge_loss(svm.fit(flat, y), val_flat, val_signs)]
    for _ in range(n_points):
        sign = _point_label(label, classes, generator)
        start = _start(rows[: flat.shape[0]], signs[: flat.shape[0]], -sign, generator)
        ascent = _Ascent(svm, rows, signs, val_flat, val_signs, (low, high))
        point, trace = ascent.run(start, sign, steps, step_size, tol)
        rows, signs = torch.cat([rows, point[None]]), torch.cat([signs, torch.tensor([sign], dtype=torch.float64)])
        losses.append(trace[-1])
    points = rows[flat.shape[0] :].to(x.dtype).reshape(n_points, *x.shape[1:])
    point_labels = torch.where(signs[flat.shape[0] :] > 0, classes[1], classes[0]).to(y.dtype)
    settings = {"n_points": n_points, "kernel": kernel, "C": C, "gamma": gamma, "label": label, "steps": steps}
    return PoisonedData(
        x=torch.cat([x, points]),
        y=torch.cat([y, point_labels]),
        indices=torch.arange(x.shape[0], x.shape[0] + n_points),
        original_labels=torch.full((n_points,), -1, dtype=torch.int64),
        attack="biggio",
        settings={**settings, "step_size": step_size, "tol": tol, "bounds": [low, high]},
        seed=seed,
        inserted=n_points,
        extra={"validation_loss": torch.tensor(losses, dtype=torch.float64)},
    )


def _signs(y: torch.Tensor, classes: tuple[int, int]) -> torch.Tensor:
    return torch.where(y == classes[1], 1.0, -1.0).to(torch.float64)


def _point_label(label: int | None, classes: tuple[int, int], generator: torch.Generator) -> float:
    if label is None:
        return 1.0 if bool(torch.randint(0, 2, (1,), generator=generator)) else -1.0
    return 1.0 if label == classes[1] else -1.0


def _start(x: torch.Tensor, signs: torch.Tensor, sign: float, generator: torch.Generator) -> torch.Tensor:
    """A random clean training row of the class ``sign`` (the attacked class), copied."""
    among = torch.nonzero(signs == sign).flatten()
    return x[among[torch.randint(0, among.numel(), (1,), generator=generator)]][0].clone()
