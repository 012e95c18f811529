"""Every check on user input, in one place, raising errors that name the argument, what came and the fix.

Called once at the framework boundary (attack entry, trainer ``fit``, CLI). Never ``assert`` on user input.
Suspicious but legal input is reported with :func:`warn`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import types
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal, overload

import numpy as np
import torch

_NORMS = ("linf", "l2", "l1", "l0")


_INTERNAL_DIRS = (os.path.dirname(os.path.abspath(__file__)) + os.sep,)
_INTERNAL_FILES = (os.path.abspath(contextlib.__file__),)


def _is_internal(filename: str) -> bool:
    return filename.startswith(_INTERNAL_DIRS) or os.path.abspath(filename) in _INTERNAL_FILES


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn``, attributed to the first caller outside advlab.

    The same warning (a model in train mode, a zero input gradient, a failed masking check) is reached through
    different paths inside the library, so no fixed ``stacklevel`` points at the user's line. This one walks the
    stack past advlab's own frames (and ``contextlib``'s, for warnings raised in a ``with`` block), so the
    warning names the user's file and line, and ``warnings.filterwarnings(module=...)`` on the user's module
    works.
    """
    frame: types.FrameType | None = sys._getframe(1)  # the caller of warn
    level = 2
    while frame is not None and _is_internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


# ---------------------------------------------------------------------- scalars
def check_choice(name: str, value: Any, choices: Iterable[Any], remedy: str = "") -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        hint = f" {remedy}" if remedy else ""
        raise ValueError(f"{name}: expected one of {choices}, got {_fmt(value)}.{hint}")


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, raising ``TypeError``/``ValueError`` when it is not an int in range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {_fmt(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: expected an int <= {maximum}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
    strict_max: bool = False,
) -> float:
    """Return ``value`` as a finite float in the given range, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise TypeError(f"{name}: expected a number, got {type(value).__name__} {_fmt(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if minimum is not None and (value < minimum or (strict_min and value == minimum)):
        op = ">" if strict_min else ">="
        raise ValueError(f"{name}: expected a number {op} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (strict_max and value == maximum)):
        op = "<" if strict_max else "<="
        raise ValueError(f"{name}: expected a number {op} {maximum}, got {value}")
    return value


def check_threat_args(norm: Any, eps: Any, bounds: Any) -> None:
    """Validate the three fields of a :class:`~advlab.threat.ThreatModel`."""
    if not isinstance(norm, str) or norm not in _NORMS:
        raise ValueError(
            f"norm: expected one of 'linf', 'l2', 'l1' (or 'l0' for sparse attacks), got {_fmt(norm)}. "
            "Write the norm in lower case, e.g. ThreatModel('linf', 0.3)."
        )
    eps = check_float("eps", eps)
    if eps < 0:
        raise ValueError(f"eps: expected a radius >= 0, got {eps}. eps is the size of the allowed perturbation.")
    if norm == "l0" and eps != int(eps):
        raise ValueError(f"eps: for norm 'l0' eps counts changed input features and must be whole, got {eps}")
    check_bounds("bounds", bounds)


def check_eps_list(eps: Sequence[float]) -> list[float]:
    """A non-empty, strictly increasing list of eps >= 0."""
    values = [check_float(f"eps[{i}]", e, minimum=0.0) for i, e in enumerate(eps)]
    if not values:
        raise ValueError("eps: expected at least one value, got an empty list. Example: --eps 0.1,0.2,0.3")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"eps: expected strictly increasing values, got {values}. Sort them: {sorted(set(values))}")
    return values


# ---------------------------------------------------------------------- tensors
def check_tensor_like(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a torch tensor or a numpy array."""
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def check_input(x: torch.Tensor, bounds: tuple[float, float], *, name: str = "x") -> None:
    """``x`` is a floating batch (N, ...) of finite values inside ``bounds``, compared in ``x``'s dtype.

    The bounds are rounded to ``x``'s dtype before the comparison: clamping a float32 tensor to ``(-0.2, 0.3)``
    gives float32's nearest values (0.30000001), which are the box's edges in float32, not outside it.
    """
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name}: expected a floating-point tensor, got dtype {x.dtype}. Convert images with x.float() / 255."
        )
    if x.dim() < 2:
        raise ValueError(f"{name}: expected a batch of shape (N, ...), got shape {tuple(x.shape)}. Add a batch axis.")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (shape {tuple(x.shape)})")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())
        raise ValueError(f"{name}: contains NaN or inf in {bad} example(s); clean the data before attacking")
    lo, hi = bounds
    low, high = x.min(), x.max()
    if bool(low < lo) or bool(high > hi):  # a tensor compared with a Python float: in the tensor's dtype
        raise ValueError(
            f"{name}: values must lie inside bounds {bounds}, got range [{float(low):.4g}, {float(high):.4g}]. "
            "Pass raw inputs (e.g. pixels scaled to [0, 1]) and give normalisation as mean/std to the model "
            "wrapper, or set the threat model's bounds."
        )


def check_binary(x: torch.Tensor, bounds: tuple[float, float], *, name: str = "x") -> None:
    """``x`` holds only the two ends of ``bounds`` (0 and 1 for binary features): what a binary threat model needs.

    Args:
        x: the batch.
        bounds: the box whose ends are the two values.
        name: the argument's name, for error messages.

    Raises:
        ValueError: a value that is neither end, naming how many and the fix.
    """
    lo, hi = bounds
    bad = ~((x == lo) | (x == hi))
    if bool(bad.any()):
        first = float(x[bad][0])
        raise ValueError(
            f"{name}: binary feature constraints need every feature to be {lo:g} or {hi:g}, got {int(bad.sum())} "
            f"other value(s) (e.g. {first:.4g}). Binarise the features first (e.g. x = (x > 0).float()), or drop "
            "binary=True from the FeatureConstraints."
        )


def check_labels(y: torch.Tensor, n: int, num_classes: int | None, *, name: str = "y") -> None:
    """``y`` is an integer vector of length ``n`` with values in ``[0, num_classes)``."""
    if y.dim() != 1:
        raise ValueError(f"{name}: expected a vector of class indices of shape ({n},), got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer class indices, got dtype {y.dtype}. Use y.long().")
    if y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per example of x), got {y.shape[0]}")
    if n and int(y.min()) < 0:
        raise ValueError(f"{name}: class indices must be >= 0, got {int(y.min())}")
    if num_classes is not None and n and int(y.max()) >= num_classes:
        raise ValueError(
            f"{name}: class index {int(y.max())} is out of range for a model with {num_classes} classes "
            f"(valid: 0..{num_classes - 1})"
        )


def check_target(target: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> None:
    """Targets are valid labels and differ from the true labels."""
    check_labels(target, y.shape[0], num_classes, name="target")
    same = (target.to(y.device) == y).nonzero().flatten()
    if same.numel():
        raise ValueError(
            f"target: equals the true label for {same.numel()} example(s) (first at index {int(same[0])}). "
            "A targeted attack needs a target class different from the true class; drop those examples "
            "or choose other targets."
        )


def check_model_output(logits: Any, n: int, *, where: str = "on x") -> None:
    """The model returned a (N, C) floating tensor of finite values.

    Args:
        logits: the model's output.
        n: the batch size.
        where: the inputs, for the message (``"on x"``, ``"on x_adv"``).

    Raises:
        TypeError: not a tensor.
        ValueError: the wrong shape, or NaN/inf values.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model: expected the forward pass to return a tensor of logits, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != n:
        raise ValueError(f"model: expected logits of shape ({n}, num_classes), got {tuple(logits.shape)}")
    finite = torch.isfinite(logits.detach()).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise ValueError(
            f"model: its output {where} contains NaN or inf for {bad.numel()} of {n} example(s) (first at index "
            f"{int(bad[0])}); predictions and success rates would be meaningless. Check the model (a log of zero, "
            "a division by zero, weights that diverged in training) before attacking it."
        )


def check_eps_in_box(eps: float, norm: str, bounds: tuple[float, float]) -> None:
    """Warn when an linf eps is at least the width of the input box (``--eps 8`` meaning 8/255).

    Every input can then reach every point of the box, so robust accuracy is 0 by construction. Only linf is
    checked: an l2/l1 radius larger than the box is how minimum-norm attacks are told "unbounded", and whole
    numbers are common l1 radii.

    Args:
        eps: the radius.
        norm: the threat model's norm.
        bounds: the input box.
    """
    width = bounds[1] - bounds[0]
    if norm != "linf" or not math.isfinite(width) or eps < width:
        return
    hint = ""
    if eps >= 1 and eps == int(eps) and width <= 1:
        hint = f" If you meant {int(eps)}/255 (pixel levels), pass eps={int(eps)}/255 (= {eps / 255:.4g})."
    warn(
        f"eps: {eps:g} is at least the width of the input box {tuple(bounds)}: within linf distance {eps:g}, every "
        f"input can reach any point of the box, so robust accuracy is 0 by construction.{hint}"
    )


def check_input_shape(x: torch.Tensor, input_shape: tuple[int, ...] | None, *, name: str = "x") -> None:
    """``x`` has the per-example shape the model declares (rank and channels)."""
    if input_shape is None:
        return
    got = tuple(x.shape[1:])
    if got != tuple(input_shape):
        what = "rank" if len(got) != len(input_shape) else "shape"
        hint = ""
        if len(input_shape) == 3 and len(got) == 3 and got[0] != input_shape[0]:
            hint = f" The model expects {input_shape[0]} channel(s) first (N, C, H, W); got {got[0]}."
        elif len(got) != len(input_shape):
            hint = f" Reshape with x.reshape(-1, *{tuple(input_shape)})."
        raise ValueError(
            f"{name}: wrong {what} for the model: expected (N, *{tuple(input_shape)}), got {tuple(x.shape)}.{hint}"
        )


# ---------------------------------------------------------------------- scikit-learn estimators
def check_fitted_estimator(name: str, estimator: Any) -> None:
    """``estimator`` is a fitted scikit-learn estimator (``check_is_fitted`` passes)."""
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(estimator, BaseEstimator):
        raise TypeError(f"{name}: expected a fitted scikit-learn estimator, got {type(estimator).__name__}")
    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise ValueError(
            f"{name}: this {type(estimator).__name__} is not fitted yet; call {name}.fit(X, y) before using it"
        ) from exc


def check_feature_count(name: str, input_shape: tuple[int, ...], n_features: int) -> None:
    """``input_shape`` flattens to the ``n_features`` a fitted model was trained on."""
    got = int(np.prod(input_shape))
    if got != n_features:
        raise ValueError(
            f"{name}: {tuple(input_shape)} has {got} features but the estimator was fitted on {n_features}. "
            f"Pass an input_shape whose product is {n_features} (e.g. ({n_features},)) or refit the estimator."
        )


# ---------------------------------------------------------------------- models
def check_num_classes(name: str, num_classes: int, minimum: int, remedy: str = "") -> None:
    """The model has at least ``minimum`` classes (e.g. the DLR loss needs 3, its targeted form 4)."""
    if num_classes < minimum:
        hint = f" {remedy}" if remedy else ""
        raise ValueError(f"{name}: needs a model with at least {minimum} classes, got {num_classes}.{hint}")


# ---------------------------------------------------------------------- ranges of random strengths
def check_strength_range(
    name: str, value: Any, *, minimum: float, maximum: float, integer: bool = False, remedy: str = ""
) -> tuple[float, float]:
    """A strength range ``(low, high)`` (or one number, meaning a fixed strength) inside ``[minimum, maximum]``.

    Used by random transformations whose strength is drawn uniformly from a range per example.
    Returns the pair as floats with ``low <= high``.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected a number or a range (low, high), got {_fmt(value)}")
        low, high = value
    else:
        low = high = value
    low = check_float(f"{name} (low)", low)
    high = check_float(f"{name} (high)", high)
    hint = f" {remedy}" if remedy else ""
    for v in (low, high):
        if v < minimum or v > maximum:
            raise ValueError(f"{name}: expected strengths in [{minimum:g}, {maximum:g}], got {low:g}..{high:g}.{hint}")
        if integer and v != int(v):
            raise ValueError(f"{name}: expected whole numbers, got {low:g}..{high:g}.{hint}")
    if low > high:
        raise ValueError(f"{name}: expected low <= high, got {low:g}..{high:g}; write it as {high:g}..{low:g}")
    return low, high


def did_you_mean(name: Any, choices: Iterable[str]) -> str:
    """`` Did you mean 'pgd'?`` for the closest of ``choices`` to ``name``, or an empty string."""
    import difflib

    close = difflib.get_close_matches(str(name).strip().lower(), list(choices), n=3)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


# ---------------------------------------------------------------------- data
def check_bounds(name: str, bounds: Any) -> tuple[float, float]:
    """``bounds`` as a pair of floats ``(low, high)`` with ``low < high``; either side may be infinite.

    An infinite side (``float("-inf")`` or ``float("inf")``) leaves the inputs unbounded on that side, as for
    standardised tabular features: the norm ball alone then bounds the perturbations.

    Args:
        name: the argument's name, for error messages.
        bounds: the pair to check.

    Returns:
        ``(low, high)`` as floats.

    Raises:
        TypeError: a side that is not a number.
        ValueError: not a pair, a side that is NaN, or ``low >= high``.

    Examples:
        >>> check_bounds("bounds", (0, 1))
        (0.0, 1.0)
        >>> check_bounds("bounds", (float("-inf"), float("inf")))
        (-inf, inf)
    """
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"{name}: expected a pair (low, high), got {_fmt(bounds)}")
    sides = []
    for i, side in enumerate(bounds):
        if isinstance(side, torch.Tensor) and side.numel() == 1:
            side = side.item()
        if isinstance(side, bool) or not isinstance(side, (int, float, np.integer, np.floating)):
            raise TypeError(
                f"{name}[{i}]: expected a number (or float('inf') for an unbounded side), got "
                f"{type(side).__name__} {_fmt(side)}"
            )
        if math.isnan(side):
            raise ValueError(f"{name}[{i}]: expected a number or ±inf, got nan")
        sides.append(float(side))
    lo, hi = sides
    if not lo < hi:
        raise ValueError(f"{name}: expected low < high, got {_fmt(tuple(bounds))}")
    return lo, hi


def as_tensor(name: str, value: Any, *, float32: Literal["numpy", "float64", "all"] = "numpy") -> torch.Tensor:
    """``value`` (a torch tensor or a numpy array) as a tensor: the one conversion of user arrays.

    A float64 numpy array becomes float32 (numpy's default, not what models hold); ``float32="float64"`` converts
    float64 tensors too, ``"all"`` every floating dtype (an oracle's inputs). Other dtypes are kept.

    Raises:
        TypeError: ``value`` is neither a tensor nor an array.
    """
    check_tensor_like(name, value)
    numpy = isinstance(value, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(value)) if numpy else value
    wide = t.dtype == torch.float64 and (numpy or float32 == "float64")
    if torch.is_floating_point(t) and t.dtype != torch.float32 and (float32 == "all" or wide):
        t = t.float()
    return t


def as_labels(name: str, value: Any) -> torch.Tensor:
    """Class labels as an integer tensor: a tensor, a numpy array, or a list (tuple, range) of ints.

    Integer labels of any width become int64; floating or boolean labels are returned as they are, for
    :func:`check_labels` to refuse with its message.

    Args:
        name: the argument's name, for error messages.
        value: the labels.

    Raises:
        TypeError: labels that are strings or objects (class names: map them to indices first), or not array-like.

    Examples:
        >>> as_labels("y", [3, 1, 4])
        tensor([3, 1, 4])
    """
    if isinstance(value, (list, tuple, range)):
        array = np.asarray(value)
        if array.dtype.kind not in "iubf" and array.size:
            what = "strings" if array.dtype.kind in "US" else "values"
            raise TypeError(
                f"{name}: expected integer class indices, got {what} such as {_fmt(next(iter(value)))}. Map class "
                "names to indices 0..K-1 first, e.g. [sorted(set(names)).index(c) for c in names]."
            )
        value = array if array.size else np.zeros(0, dtype=np.int64)
    t = as_tensor(name, value)
    return t if (t.dtype.is_floating_point or t.dtype == torch.bool) else t.long()


X_KEYS = ("x", "X", "inputs", "images", "data")
"""Keys under which :func:`as_xy` looks for the inputs in a dict (the first one present wins)."""
Y_KEYS = ("y", "Y", "labels", "targets", "target")
"""Keys under which :func:`as_xy` looks for the labels in a dict (the first one present wins)."""
LOADER_BATCH = 256
"""Batch size of the ``DataLoader`` that :func:`as_xy` reads a map-style torch ``Dataset`` with."""
_RANDOM_SAMPLERS = (
    torch.utils.data.RandomSampler,
    torch.utils.data.SubsetRandomSampler,
    torch.utils.data.WeightedRandomSampler,
)


def _from_mapping(data: Any, name: str) -> tuple[Any, Any]:
    x_key = next((k for k in X_KEYS if k in data), None)
    if x_key is None:
        raise ValueError(
            f"{name}: a dict of arrays needs the inputs under 'x' (or one of {list(X_KEYS[1:])}) and the labels "
            f"under 'y' (or one of {list(Y_KEYS[1:])}); got keys {sorted(map(str, data))}"
        )
    y_key = next((k for k in Y_KEYS if k in data), None)
    return data[x_key], None if y_key is None else data[y_key]


def _batch_parts(batch: Any, name: str) -> tuple[Any, Any]:
    if isinstance(batch, dict):
        return _from_mapping(batch, name)
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        return batch[0], batch[1] if len(batch) == 2 else None
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return batch, None
    raise TypeError(
        f"{name}: expected batches (x, y), dicts with 'x' and 'y' or tensors x, got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


def _from_loader(loader: torch.utils.data.DataLoader, name: str) -> tuple[Any, Any]:
    sampler = getattr(loader.batch_sampler, "sampler", None) or loader.sampler
    if isinstance(sampler, _RANDOM_SAMPLERS) or isinstance(loader.sampler, _RANDOM_SAMPLERS):
        raise ValueError(
            f"{name}: this DataLoader shuffles ({type(sampler).__name__}): each pass gives another order, so results "
            "could not be matched to examples or resumed. Pass DataLoader(dataset, shuffle=False) or the dataset."
        )
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for i, batch in enumerate(loader):
        bx, by = _batch_parts(batch, f"{name} (batch {i})")
        xs.append(as_tensor(f"{name} x (batch {i})", bx).detach().cpu())
        if by is not None:
            ys.append(as_labels(f"{name} y (batch {i})", by).detach().cpu())
    if not xs:
        raise ValueError(f"{name}: the DataLoader yielded no batches")
    if ys and len(ys) != len(xs):
        raise ValueError(f"{name}: some batches have labels and some do not ({len(ys)} of {len(xs)})")
    return torch.cat(xs), torch.cat(ys) if ys else None


def _unpack(data: Any, name: str, labels: str) -> tuple[Any, Any]:
    """``(x, y)`` in whatever containers ``data`` holds them (``y`` may be ``None``)."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, dict):
        return _from_mapping(data, name)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return data, None  # as_xy says that labels are needed when they are
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) in (1, 2):
        return data.tensors[0], data.tensors[1] if len(data.tensors) == 2 else None
    if isinstance(data, torch.utils.data.DataLoader):
        return _from_loader(data, name)
    if isinstance(data, torch.utils.data.Dataset):
        return _from_loader(torch.utils.data.DataLoader(data, batch_size=LOADER_BATCH), name)
    expected = (
        "a Dataset (with .x and .y) or a pair (x, y), a dict {'x': ..., 'y': ...}, a torch TensorDataset, "
        "Dataset or DataLoader yielding (x, y)" + (", or inputs x" if labels != "required" else "")
    )
    raise TypeError(f"{name}: expected {expected}, got {type(data).__name__}")


def check_float_inputs(name: str, x: torch.Tensor) -> None:
    """``x`` holds floating-point values: integer data (uint8 pixels 0..255) is never rescaled silently.

    Raises:
        TypeError: ``x`` has an integer or boolean dtype; the message says how to scale it.
    """
    if torch.is_floating_point(x):
        return
    remedy = (
        "uint8 images hold pixels 0..255 while models take [0, 1]: divide them yourself, x.float() / 255 "
        "(on the command line: --scale 255)"
        if x.dtype == torch.uint8
        else "convert with x.float(), scaled into the model's bounds"
    )
    raise TypeError(
        f"{name}: expected a floating-point tensor, got dtype {x.dtype}. advlab never rescales "
        f"inputs silently; {remedy}."
    )


@overload
def as_xy(
    data: Any,
    name: str = ...,
    *,
    labels: Literal["required"] = ...,
    float32: Literal["numpy", "float64", "all"] = ...,
    parts: tuple[str, str] | None = ...,
) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def as_xy(
    data: Any,
    name: str = ...,
    *,
    labels: Literal["optional", "none"],
    float32: Literal["numpy", "float64", "all"] = ...,
    parts: tuple[str, str] | None = ...,
) -> tuple[torch.Tensor, torch.Tensor | None]: ...
def as_xy(
    data: Any,
    name: str = "data",
    *,
    labels: str = "required",
    float32: Literal["numpy", "float64", "all"] = "float64",
    parts: tuple[str, str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one place where data in the forms users have becomes ``(x, y)`` tensors.

    Accepted forms:

    * an advlab :class:`~advlab.data.Dataset`, or anything with ``.x`` and ``.y``;
    * a pair ``(x, y)``;
    * a dict of arrays ``{"x": ..., "y": ...}`` (the inputs may also be under ``"X"``, ``"inputs"``, ``"images"``
      or ``"data"``, the labels under ``"Y"``, ``"labels"``, ``"targets"`` or ``"target"``: see
      :data:`X_KEYS`, :data:`Y_KEYS`; so a scikit-learn ``Bunch`` works too);
    * a ``torch.utils.data.TensorDataset`` of ``(x, y)`` (or ``(x,)``);
    * a ``torch.utils.data.DataLoader`` yielding ``(x, y)`` pairs, dicts or tensors ``x``: it is iterated
      **once**, in its order, and the batches are concatenated in memory (on the CPU). A loader that shuffles
      (a random sampler) is refused: each pass would give another order, so results could not be matched to
      examples or resumed. A loader with ``drop_last=True`` leaves its last partial batch out;
    * any other torch ``Dataset`` of ``(x, y)`` items, read through a ``DataLoader`` of :data:`LOADER_BATCH`;
    * inputs ``x`` alone, when ``labels`` is not ``"required"``.

    Arrays are torch tensors or numpy arrays; labels may also be lists (or tuples, ranges) of ints. ``x`` comes
    back as a floating tensor (float64 becomes float32 unless ``float32`` says otherwise), ``y`` as int64 (or
    ``None``). Integer inputs such as uint8 images are refused, never rescaled silently
    (:func:`check_float_inputs`).

    Args:
        data: the data, in one of the forms above.
        name: the argument's name, for error messages.
        labels: ``"required"``, ``"optional"`` (``y`` may be missing) or ``"none"`` (``x`` alone expected).
        float32: which floating inputs become float32, as in :func:`as_tensor`.
        parts: the names of ``x`` and ``y`` in error messages; default ``"{name} x"`` and ``"{name} y"``.

    Returns:
        ``(x, y)`` tensors (``y`` may be ``None`` unless labels are required).

    Raises:
        TypeError: data in none of these forms, arrays that are not tensors/arrays, integer inputs, or labels
            that are strings.
        ValueError: labels required but missing, a dict without inputs, a shuffling or empty DataLoader.

    Examples:
        >>> x, y = as_xy({"x": np.zeros((3, 4)), "y": [0, 1, 2]})
        >>> x, y = as_xy(DataLoader(TensorDataset(x, y), batch_size=2))
    """
    x, y = _unpack(data, name, labels)
    x_name, y_name = parts or (f"{name} x", f"{name} y")
    x_t = as_tensor(x_name, x, float32=float32)
    check_float_inputs(x_name, x_t)
    if y is None:
        if labels == "required":
            raise ValueError(
                f"{name}: labels are needed; pass (x, y), a Dataset, a DataLoader or a dict with the labels"
                + (" (or the labels as y)" if parts else "")
            )
        return x_t, None
    return x_t, as_labels(y_name, y)
