"""The self-contained HTML report of a poisoning experiment: trigger, poisons, clean vs poisoned accuracy, attack
success, and the detection-score histogram of a defense when one ran.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advlab import io
from advlab.models import predict
from advlab.poisoning.base import PoisonedData, Trigger
from advlab.reports.figures import PALETTE, as_image, plt, save_png, to_numpy
from advlab.reports.html import environment

MAX_POISONS = 8
"""Poisoned training examples shown in the report."""
FIGURES = {
    "trigger": "The trigger: what it writes (pattern) and where (mask; 1 = the pattern replaces the input). What an "
    "additive trigger adds is shown magnified on grey (grey: no change; the magnification in the panel's title).",
    "poisons": "Poisoned training examples: the clean image and label (top), the training copy and its label "
    "(middle), and the poisoned model on a triggered test image (bottom).",
    "accuracy": "Clean test accuracy and attack success of the model trained on clean data and of the model "
    "trained on the poisoned data.",
    "detection": "Detection scores of the training rows, poisons and clean rows apart.",
    "target": "The target test image of a targeted attack: its true label, the class the clean model gives it and "
    "the class the poisoned model gives it.",
}
UNTRIGGERED = {
    "poisons": "Poisoned training examples: the clean image and label (top), and the training copy and its label "
    "(bottom).",
    "accuracy": "Clean test accuracy of the model trained on clean data and of the model trained on the poisoned "
    "data (an attack without a trigger has no attack success rate).",
}
"""The captions that change for an attack without a trigger: its poisons figure has no triggered row, its accuracy
figure no attack success (:func:`poisons_figure`, :func:`accuracy_figure`)."""


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _show(ax: Any, image: np.ndarray, title: str, colour: str = "#111827") -> None:
    img = as_image(image)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])


def trigger_panels(trigger: Trigger) -> list[tuple[np.ndarray, str]]:
    """The images :func:`trigger_figure` draws, ``(C, H, W)`` in [0, 1], with their titles.

    A trigger that writes a pattern gives its pattern (where the mask is non-zero) and its mask. What an additive
    trigger adds (:attr:`~advlab.poisoning.base.Trigger.offset`, e.g. the reduced-amplitude corners of Turner et al.)
    is drawn on mid-grey, magnified so that its largest change reaches black or white (grey: no change; the title
    gives the magnification), beside where it adds anything.
    """
    pattern, mask = to_numpy(trigger.pattern), to_numpy(trigger.mask)
    panels: list[tuple[np.ndarray, str]] = []
    if (mask > 0).any():
        panels.append((np.clip(pattern * (mask > 0), 0, 1), "pattern"))
        panels.append((np.broadcast_to(mask, pattern.shape).copy(), "mask"))
    if trigger.offset is not None:
        offset = np.broadcast_to(to_numpy(trigger.offset), pattern.shape)
        largest = float(np.abs(offset).max())
        scale = 0.5 / largest if largest > 0 else 1.0
        where = np.abs(offset).max(axis=0, keepdims=True) > 0
        panels.append((np.clip(0.5 + scale * offset, 0, 1), f"added, x{scale:.3g}"))
        panels.append((np.broadcast_to(where, pattern.shape).astype(np.float32), "where"))
    return panels


def trigger_figure(trigger: Trigger) -> bytes:
    """The panels of :func:`trigger_panels` side by side, under the trigger's name."""
    panels = trigger_panels(trigger)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.1 * len(panels), 2.4), squeeze=False)
    for ax, (image, title) in zip(axes[0], panels, strict=True):
        _show(ax, image, title)
    fig.suptitle(trigger.name, fontsize=9)
    fig.tight_layout()
    return save_png(fig, None)


def poisons_figure(
    clean_x: torch.Tensor, poisoned: PoisonedData, model: torch.nn.Module, x_test: torch.Tensor, classes: Sequence[str]
) -> bytes:
    """The first poisons beside their clean originals, and (backdoors) the poisoned model on triggered test images."""
    rows = poisoned.indices[:MAX_POISONS]
    n, triggered = rows.numel(), poisoned.trigger is not None
    fig, axes = plt.subplots(3 if triggered else 2, max(n, 1), figsize=(1.4 * max(n, 1) + 0.8, 5.2), squeeze=False)
    name = lambda c: classes[c] if 0 <= c < len(classes) else str(c)  # noqa: E731
    n_clean, base_rows = clean_x.shape[0], poisoned.extra.get("base_rows")
    for j, row in enumerate(rows.tolist()):
        if row < n_clean:
            _show(axes[0, j], to_numpy(clean_x[row]), f"clean: {name(int(poisoned.original_labels[j]))}")
        elif base_rows is not None:  # an inserted poison: the training image it started from
            base = int(base_rows[row - n_clean])
            _show(axes[0, j], to_numpy(clean_x[base]), f"base: {name(int(poisoned.y[row]))}")
        else:
            axes[0, j].axis("off")
        _show(axes[1, j], to_numpy(poisoned.x[row]), f"poison: {name(int(poisoned.y[row]))}", "#b91c1c")
    if triggered and n:
        stamped = poisoned.trigger.apply(x_test[:n])  # type: ignore[union-attr]
        preds = predict(model, stamped).tolist()
        for j in range(n):
            _show(axes[2, j], to_numpy(stamped[j]), f"pred {name(preds[j])}", "#1d4ed8")
    for r, label in enumerate(("original", "training copy", "triggered test")[: axes.shape[0]]):
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return save_png(fig, None)


def accuracy_figure(metrics: Mapping[str, Any]) -> bytes:
    """Bars: clean accuracy and attack success, clean-trained model beside poisoned model."""
    measures = [("clean accuracy", "baseline_accuracy", "clean_accuracy")]
    if metrics.get("attack_success_rate") is not None:
        measures.append(("attack success", "baseline_attack_success_rate", "attack_success_rate"))
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    xs = np.arange(len(measures))
    for k, (label, key) in enumerate((("trained on clean data", 1), ("trained on poisoned data", 2))):
        values = [100 * (metrics[m[key]] or 0.0) for m in measures]
        bars = ax.bar(xs + (k - 0.5) * 0.36, values, 0.36, label=label, color=PALETTE[k])
        ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.set_xticks(xs, [m[0] for m in measures])
    ax.set_ylim(0, 125)
    ax.set_ylabel("%")
    ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    return save_png(fig, None)


def target_figure(
    image: torch.Tensor, targeted: Mapping[str, Any], metrics: Mapping[str, Any], classes: Sequence[str]
) -> bytes:
    """The target image of a targeted attack with its label, the clean model's and the poisoned model's classes."""
    name = lambda c: "–" if c is None else (classes[c] if 0 <= c < len(classes) else str(c))  # noqa: E731
    fig, ax = plt.subplots(figsize=(2.6, 2.9))
    hit = bool(metrics.get("targeted_success"))
    title = (
        f"test row {targeted['target_index']}: {name(targeted['target_label'])}\n"
        f"clean model: {name(metrics.get('baseline_target_prediction'))}\n"
        f"poisoned model: {name(metrics.get('target_prediction'))} (wanted {name(targeted['intended_class'])})"
    )
    _show(ax, to_numpy(image), title, "#b91c1c" if hit else "#111827")
    fig.tight_layout()
    return save_png(fig, None)


def detection_figure(scores: torch.Tensor, is_poison: torch.Tensor, threshold: float | None = None) -> bytes:
    """Histogram of a defense's detection scores, poisons and clean rows apart (and its threshold)."""
    s, p = to_numpy(scores).astype(float), to_numpy(is_poison).astype(bool)
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    bins = np.histogram_bin_edges(s, bins=40).tolist()
    ax.hist(s[~p], bins=bins, alpha=0.7, label="clean rows", color=PALETTE[0])
    ax.hist(s[p], bins=bins, alpha=0.7, label="poisons", color=PALETTE[1])
    if threshold is not None:
        ax.axvline(threshold, color="#111827", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("detection score")
    ax.set_ylabel("training rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, None)


def render_poison_report(record: Mapping[str, Any], figures: Mapping[str, bytes], title: str) -> str:
    """The HTML page of a poisoning experiment from its ``record`` (``report.json``) and figures (PNG bytes).

    Args:
        record: what :meth:`~advlab.poisoning.experiment.PoisonExperiment.record` returns, plus ``data``.
        figures: PNG bytes by name (:data:`FIGURES`); ``detection`` is optional.
        title: the page title.

    Returns:
        The HTML text (self-contained: styles inline, figures as base64 PNG).
    """
    captions = FIGURES if record.get("attack", {}).get("trigger") is not None else {**FIGURES, **UNTRIGGERED}
    sections = [
        {"name": name, "title": name.capitalize(), "caption": captions[name], "uri": _uri(png)}
        for name, png in figures.items()
        if name in FIGURES
    ]
    return (
        environment()
        .get_template("poison.html.j2")
        .render(title=title, r=record, m=record["metrics"], sections=sections, detection="detection" in figures)
    )


def write_poison_report(
    out: str | Path,
    record: Mapping[str, Any],
    clean_x: torch.Tensor,
    poisoned: PoisonedData,
    model: torch.nn.Module,
    x_test: torch.Tensor,
    classes: Sequence[str],
    detection: tuple[torch.Tensor, torch.Tensor, float | None] | None = None,
) -> Path:
    """Write ``out/report.html`` (figures drawn here) and return its path.

    Args:
        out: the output folder (exists).
        record: the experiment's record (``report.json``).
        clean_x: the clean training inputs (to show the poisons' originals).
        poisoned: the poisoned training set.
        model: the poisoned model.
        x_test: clean test inputs (the first few are shown triggered).
        classes: class names.
        detection: a defense's ``(scores, is_poison, threshold)``, for the detection histogram; None when no
            defense ran.

    Returns:
        The path of the HTML report.

    Examples:
        >>> write_poison_report("runs/p", exp.record(), x, exp.poisoned_, exp.model_, x_test, classes)
    """
    figures: dict[str, bytes] = {}
    if poisoned.trigger is not None:
        figures["trigger"] = trigger_figure(poisoned.trigger)
    if poisoned.x.dim() == 4:
        figures["poisons"] = poisons_figure(clean_x, poisoned, model, x_test, classes)
    figures["accuracy"] = accuracy_figure(record["metrics"])
    if record.get("targeted") is not None:
        row = record["targeted"]["target_index"]
        figures["target"] = target_figure(x_test[row], record["targeted"], record["metrics"], classes)
    if detection is not None:
        figures["detection"] = detection_figure(*detection)
    title = f"Poisoning: {record['attack']['attack']} on {record.get('data', {}).get('name', 'data')}"
    return io.write_text(Path(out) / "report.html", render_poison_report(record, figures, title))
