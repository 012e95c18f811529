"""Figures for the explain analyses (matplotlib, Agg), each returned as PNG bytes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from advlab.explain.cross_section import CrossSection
from advlab.explain.gradients import GradientAmplitudes
from advlab.explain.linearity import LogitResponse
from advlab.explain.noise import PerturbationComparison
from advlab.explain.visualize import ClassVisualization
from advlab.reports.figures import PALETTE, as_image, plt, save_png


def cross_sections_figure(sections: Sequence[CrossSection], classes: Sequence[str]) -> bytes:
    """Side-by-side class maps; the true class is hatched-free blue, the origin a white cross."""
    fig, axes = plt.subplots(1, len(sections), figsize=(3.4 * len(sections), 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, cs in zip(axes[0], sections):
        span = float(cs.coords.max())
        ax.imshow(
            cs.classes.numpy(),
            origin="lower",
            cmap=cmap,
            vmin=-0.5,
            vmax=9.5,
            extent=(-span, span, -span, span),
            interpolation="nearest",
        )
        ax.plot([0], [0], marker="+", color="white", markersize=14, mew=2.5)
        ax.set_xlabel("adversarial direction (L2)" if cs.kind == "adversarial" else "random direction 1 (L2)")
        ax.set_ylabel("random orthogonal direction (L2)" if cs.kind == "adversarial" else "random direction 2 (L2)")
        flip = (
            f"stays within ±{float(cs.coords.max()):.2f}"
            if cs.flip_distance == float("inf")
            else f"leaves it at {cs.flip_distance:.2f}"
        )
        ax.set_title(f"{cs.kind}: class {classes[cs.label]}\n{flip}", fontsize=10)
    present = sorted({int(c) for cs in sections for c in cs.classes.unique()})
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(c)) for c in present]
    fig.legend(
        handles,
        [classes[c] for c in present],
        loc="lower center",
        ncol=min(10, len(present)),
        fontsize=8,
        bbox_to_anchor=(0.5, -0.06),
    )
    fig.tight_layout()
    return save_png(fig, None)


def logit_response_figure(resp: LogitResponse, classes: Sequence[str]) -> bytes:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    eps = resp.eps.numpy()
    logits = resp.logits.numpy()
    probs = torch.softmax(resp.logits, 1).numpy()
    cmap = plt.get_cmap("tab10")
    for c in range(logits.shape[1]):
        lw = 2.6 if c == resp.label else 1.2
        a1.plot(eps, logits[:, c], color=cmap(c % 10), lw=lw, label=str(classes[c]))
        a2.plot(eps, probs[:, c], color=cmap(c % 10), lw=lw)
    for ax, title in ((a1, "logits"), (a2, "softmax probabilities")):
        ax.axvline(0, color="#9ca3af", lw=0.8)
        ax.set_xlabel("eps along sign(gradient)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    a1.legend(fontsize=7, ncol=2)
    fig.suptitle(f"true class {classes[resp.label]} (thick); mean R² of a linear fit {resp.r2:.3f}", fontsize=10)
    fig.tight_layout()
    return save_png(fig, None)


def perturbation_figure(cmps: dict[str, PerturbationComparison]) -> bytes:
    names = [r["name"] for r in next(iter(cmps.values())).rows]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(cmps)
    for i, (label, cmp) in enumerate(cmps.items()):
        vals = [100 * r["accuracy"] for r in cmp.rows]
        pos = np.arange(len(names)) + i * width - 0.4 + width / 2
        bars = ax.bar(pos, vals, width, color=PALETTE[i % len(PALETTE)], label=label)
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 1, f"{v:.0f}", ha="center", fontsize=8)
    ax.set_xticks(np.arange(len(names)), names, rotation=12, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 118)
    ax.legend(fontsize=8, loc="upper right", ncol=len(cmps))
    ax.set_title(f"perturbations of the same size (L∞ eps = {next(iter(cmps.values())).eps:g})", fontsize=10)
    fig.tight_layout()
    return save_png(fig, None)


def gradient_figure(amps: dict[str, GradientAmplitudes]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, (label, a) in enumerate(amps.items()):
        v = a.l2.numpy()
        v = np.log10(v[v > 0]) if (v > 0).any() else np.array([])
        if v.size:
            ax.hist(
                v,
                bins=40,
                alpha=0.55,
                color=PALETTE[i % len(PALETTE)],
                label=f"{label} (median {float(a.l2.median()):.2g}, zero {100 * a.zero_fraction:.0f}%)",
            )
    ax.set_xlabel("log10 of the per-example L2 norm of the input gradient")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, None)


def visualization_figure(vizs: dict[str, ClassVisualization], classes: Sequence[str]) -> bytes:
    rows = len(vizs)
    k = next(iter(vizs.values())).x.shape[0]
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.25 * (k + 1), 1.45 * rows), squeeze=False)
    for r, (label, viz) in enumerate(vizs.items()):
        img = as_image(viz.start[0].numpy())
        axes[r][0].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        axes[r][0].set_title("start", fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=9)
        for c in range(k):
            img = as_image(viz.x[c].numpy())
            axes[r][c + 1].imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            axes[r][c + 1].set_title(f"{classes[c]} {100 * float(viz.confidence[c]):.0f}%", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return save_png(fig, None)
