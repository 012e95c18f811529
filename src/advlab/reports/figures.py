"""Report figures as PNG bytes (matplotlib, Agg backend): example grids, robust-accuracy curves, per-attack bars,
transferability heat maps.

Every function returns the PNG bytes and, when given a path, also writes them there atomically.
"""

from __future__ import annotations

import io as _io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from advlab import io
from advlab.threat import format_eps

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563")
"""Colours of successive curves and bars (colour-blind-friendly enough, readable in print)."""
NORM_SYMBOL = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}
DPI = 110


def save_png(fig: Figure, path: str | Path | None) -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        io.write_bytes(path, data)
    return data


def to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def as_image(v: np.ndarray) -> np.ndarray:
    """One example as an (H, W) or (H, W, 3) array: CHW images, HWC images, or flat vectors (squared when possible)."""
    if v.ndim == 3 and v.shape[0] in (1, 3):
        v = np.transpose(v, (1, 2, 0))
    if v.ndim == 3 and v.shape[2] == 1:
        v = v[:, :, 0]
    if v.ndim == 1:
        side = math.isqrt(v.size)
        v = v.reshape(side, side) if side * side == v.size else v.reshape(1, -1)
    return v


def _label(i: int, classes: Sequence[str] | None) -> str:
    if classes is not None and 0 <= i < len(classes):
        return str(classes[i])
    return str(i)


def example_grid(
    x: Any,
    x_adv: Any,
    y: Any,
    pred_clean: Any,
    pred_adv: Any,
    classes: Sequence[str] | None,
    path: str | Path | None = None,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> bytes:
    """A grid of adversarial examples: for each example (a column) the original, the amplified perturbation, the adversarial.

    The perturbation row shows ``x_adv - x`` rescaled so its largest entry fills the colour range (blue for
    negative, red for positive on grey-scale inputs; centred on mid-grey for colour images), with the
    amplification factor and the L∞/L2 norms in the caption.

    Args:
        x: clean inputs ``(N, C, H, W)`` (or ``(N, D)``), torch or numpy.
        x_adv: adversarial inputs, same shape.
        y: true labels ``(N,)``.
        pred_clean: predictions on ``x``.
        pred_adv: predictions on ``x_adv``.
        classes: class names (``None``: class indices).
        path: where to also write the PNG (``None``: only return the bytes).
        bounds: the input box, for the display range (where a side is infinite, the range of ``x`` and ``x_adv``).

    Returns:
        The PNG bytes.

    Examples:
        >>> png = example_grid(x[:8], result.x_adv[:8], y[:8], model.predict(x[:8]), model.predict(result.x_adv[:8]),
        ...                    ["0", "1", ...], "grid.png")
    """
    xs, xa = to_numpy(x).astype(np.float32), to_numpy(x_adv).astype(np.float32)
    ys, pc, pa = to_numpy(y).astype(int), to_numpy(pred_clean).astype(int), to_numpy(pred_adv).astype(int)
    n = xs.shape[0]
    if n == 0:
        fig = plt.figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "no adversarial examples to show", ha="center", va="center", color="#6b7280")
        return save_png(fig, path)
    lo, hi = bounds
    if not (np.isfinite(lo) and np.isfinite(hi)):  # unbounded features: show the range of the values drawn
        lo, hi = float(min(xs.min(), xa.min())), float(max(xs.max(), xa.max()))
        hi = hi if hi > lo else lo + 1.0
    cols = n
    fig, axes = plt.subplots(3, cols, figsize=(1.5 * cols + 0.9, 6.0), squeeze=False)
    for j in range(cols):
        img, adv = as_image(xs[j]), as_image(xa[j])
        delta = as_image(xa[j] - xs[j])
        amp = float(np.abs(delta).max())
        gray = img.ndim == 2
        kw = dict(cmap="gray", vmin=lo, vmax=hi) if gray else {}
        show = (lambda a: a) if gray else (lambda a: np.clip((a - lo) / (hi - lo), 0, 1))
        axes[0, j].imshow(show(img), interpolation="nearest", **kw)
        axes[2, j].imshow(show(adv), interpolation="nearest", **kw)
        if gray:
            axes[1, j].imshow(delta, cmap="RdBu_r", vmin=-(amp or 1.0), vmax=(amp or 1.0), interpolation="nearest")
        else:
            axes[1, j].imshow(np.clip(0.5 + delta / (2 * (amp or 1.0)), 0, 1), interpolation="nearest")
        ok_clean = pc[j] == ys[j]
        axes[0, j].set_title(
            f"true {_label(ys[j], classes)}\npred {_label(pc[j], classes)}",
            fontsize=8,
            color="#111827" if ok_clean else "#b91c1c",
        )
        l2 = float(np.sqrt(((xa[j] - xs[j]) ** 2).sum()))
        factor = (hi - lo) / (2 * amp) if amp > 0 else 1.0
        axes[1, j].set_title(f"×{factor:.0f}  L∞ {amp:.3g}\nL2 {l2:.3g}", fontsize=7, color="#374151")
        axes[2, j].set_title(
            f"pred {_label(pa[j], classes)}", fontsize=8, color="#b91c1c" if pa[j] != ys[j] else "#111827"
        )
        for r in range(3):
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            for s in axes[r, j].spines.values():
                s.set_color("#d1d5db")
    for r, name in enumerate(("original", "perturbation\n(amplified)", "adversarial")):
        axes[r, 0].set_ylabel(name, fontsize=8, color="#374151")
    fig.tight_layout(h_pad=1.4, w_pad=0.4)
    return save_png(fig, path)


def robustness_curve(
    curves: Sequence[dict[str, Any]],
    norm: str,
    path: str | Path | None = None,
    *,
    title: str | None = None,
) -> bytes:
    """Robust accuracy versus eps, one line per model, with its 95% confidence band.

    Args:
        curves: one dict per model: ``label``, ``eps`` (list), ``accuracy`` (list), ``low``/``high`` (CI lists),
            and optionally ``clean`` (accuracy at eps = 0) with ``clean_low``/``clean_high``.
        norm: the threat model's norm (axis label).
        path: where to also write the PNG.
        title: optional title.

    Returns:
        The PNG bytes.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.9))
    for c_i, c in enumerate(curves):
        color = PALETTE[c_i % len(PALETTE)]
        eps, acc, low, high = list(c["eps"]), list(c["accuracy"]), list(c["low"]), list(c["high"])
        if c.get("clean") is not None and (not eps or eps[0] > 0):
            eps, acc = [0.0] + eps, [c["clean"]] + acc
            low, high = [c.get("clean_low", c["clean"])] + low, [c.get("clean_high", c["clean"])] + high
        e = np.asarray(eps)
        ax.fill_between(e, 100 * np.asarray(low), 100 * np.asarray(high), color=color, alpha=0.15, linewidth=0)
        label = c["label"] if not c["label"].startswith("_") else "\u200b" + c["label"]  # matplotlib hides "_..."
        ax.plot(e, 100 * np.asarray(acc), marker="o", markersize=4.5, color=color, linewidth=2, label=label)
    ax.set_xlabel(f"eps ({NORM_SYMBOL.get(norm, norm)})")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_xlim(left=0)
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    if title:
        ax.set_title(title, fontsize=11)
    ax.legend(frameon=False, fontsize=9, loc="best")
    ax.text(1.0, -0.2, "shaded: 95% Wilson interval", transform=ax.transAxes, ha="right", fontsize=7.5, color="#6b7280")
    return save_png(fig, path)


def attack_bars(report: Any, path: str | Path | None = None) -> bytes:
    """Accuracy after each stage of the cascade (clean, then after each attack), grouped by eps.

    Args:
        report: an :class:`~advlab.evaluation.EvaluationReport`.
        path: where to also write the PNG.

    Returns:
        The PNG bytes.
    """
    labels = ["clean"] + [a["label"] for a in report.attacks]
    groups = [r.eps for r in report.results]
    values = [[report.clean_accuracy] + [s.accuracy_after for s in r.stages] for r in report.results]
    k = len(labels)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) * k * 0.45 + 2), 3.6))
    x = np.arange(len(groups))
    for j, lab in enumerate(labels):
        vals = [100 * v[j] for v in values]
        color = "#9ca3af" if j == 0 else PALETTE[(j - 1) % len(PALETTE)]
        bars = ax.bar(
            x - 0.4 + width * (j + 0.5), vals, width * 0.92, label=lab if j == 0 else f"after {lab}", color=color
        )
        if k * len(groups) <= 24:
            for b, v in zip(bars, vals):
                ax.text(
                    b.get_x() + b.get_width() / 2,
                    v + 1,
                    f"{v:.0f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="#374151",
                )
    ax.set_xticks(x, [f"eps = {format_eps(g, report.bounds)}" for g in groups])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 110)
    ax.grid(True, axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.legend(frameon=False, fontsize=8, ncol=min(k, 4), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return save_png(fig, path)


def transfer_heatmap(
    error: Sequence[Sequence[float]],
    sources: Sequence[str],
    targets: Sequence[str],
    path: str | Path | None = None,
    *,
    title: str | None = None,
) -> bytes:
    """Heat map of a transferability matrix (rows: sources, columns: targets) with the rate written in each cell.

    Args:
        error: ``error[i][j]``, the fraction of source ``i``'s adversarial examples target ``j`` misclassifies
            (:attr:`advlab.blackbox.TransferMatrix.error`).
        sources: row names (where the examples were crafted).
        targets: column names (where they were evaluated).
        path: where to also write the PNG.
        title: optional title.

    Returns:
        The PNG bytes.

    Examples:
        >>> tm = transfer_matrix({"dnn": net, "lr": lr}, x, y)
        >>> transfer_heatmap(tm.error, tm.sources, tm.targets, "transfer.png")
    """
    data = np.asarray(error, dtype=float) * 100
    fig, ax = plt.subplots(figsize=(1.1 * len(targets) + 2.5, 0.6 * len(sources) + 1.8))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("target (evaluated on)")
    ax.set_ylabel("source (crafted on)")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            colour = "white" if data[i, j] < 60 else "black"
            ax.text(j, i, f"{data[i, j]:.0f}", ha="center", va="center", color=colour, fontsize=9)
    fig.colorbar(im, ax=ax, label="target error on adversarial examples (%)")
    if title:
        ax.set_title(title)
    return save_png(fig, path)
