"""Inputs and labels as flat float64 numpy arrays for the scikit-learn attacks: conversion, checks, Lp distances."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from advlab import validation

NORMS = ("linf", "l2", "l1", "l0")
"""The norms :func:`distance` measures."""


def distance(delta: np.ndarray, norm: str) -> np.ndarray:
    """Norm over the last axis (``"linf"``, ``"l2"``, ``"l1"``, or ``"l0"``: the number of non-zero entries)."""
    if norm == "linf":
        return np.abs(delta).max(-1)
    if norm == "l2":
        return np.sqrt((delta * delta).sum(-1))
    if norm == "l1":
        return np.abs(delta).sum(-1)
    return (delta != 0).sum(-1).astype(np.float64)


def to_flat(x: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` (torch or numpy, ``(N, ...)``) as a float64 ``(N, D)`` array, and its original shape.

    Raises:
        TypeError: not floating point. ValueError: empty, a single example without a batch axis, NaN or inf.
    """
    validation.check_tensor_like("x", x)
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty batch of shape (N, ...), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"x: expected floating-point inputs, got dtype {arr.dtype}. Convert with x.float() / 255.")
    if not np.isfinite(arr).all():
        raise ValueError("x: contains NaN or inf; clean the data before attacking")
    return arr.reshape(arr.shape[0], -1).astype(np.float64), arr.shape


def restore(flat: np.ndarray, shape: tuple[int, ...], like: Any) -> Any:
    """``flat`` reshaped to ``shape``, in the container, dtype (and device) of ``like``."""
    out = flat.reshape(shape)
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(out).to(dtype=like.dtype, device=like.device)
    return out.astype(np.asarray(like).dtype)


def label_array(name: str, y: Any, n: int, num_classes: int) -> np.ndarray:
    """Class indices ``(n,)`` as an int64 array, checked (the error names ``name``)."""
    validation.check_tensor_like(name, y)
    t = torch.as_tensor(y.detach().cpu() if isinstance(y, torch.Tensor) else np.asarray(y))
    validation.check_labels(t, n, num_classes, name=name)
    return t.numpy().astype(np.int64)


def check_flat_inputs(norm: str, bounds: tuple[float, float], flat: np.ndarray, n_features: int) -> None:
    """The norm is one of :data:`NORMS`, the bounds are a box, and ``flat`` has the model's features inside it."""
    validation.check_choice("norm", norm, NORMS)
    validation.check_threat_args("linf", 0.0, bounds)
    if flat.shape[1] != n_features:
        raise ValueError(
            f"x: has {flat.shape[1]} features per example but the model was fitted on {n_features}; "
            "pass inputs with the training data's layout"
        )
    lo, hi = bounds
    if flat.min() < lo or flat.max() > hi:
        raise ValueError(f"x: values must lie inside bounds {bounds}, got range [{flat.min():.4g}, {flat.max():.4g}]")
