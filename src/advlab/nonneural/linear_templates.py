"""Karpathy's "breaking linear classifiers" demo: push inputs toward a class along its linear template.

For a linear (softmax) classifier ``scores = W x + b`` the gradient of class ``c``'s score with respect to the
input is the row ``w_c`` — the class *template*, which looks like a blurry average image of the class.
Karpathy's blog post ("Breaking Linear Classifiers on ImageNet", 2015) fools such a classifier by taking the
gradient of the target class score and adding a tiny multiple of it to the image, then shows the templates
next to the fooled images. This module implements that procedure with the sign step of Goodfellow et al.
(arXiv:1412.6572), which the post also discusses, in three flavours (``direction``):

* ``"template"``: ``x + eps * sign(w_c)`` — the gradient of the target score, as in the post;
* ``"margin"`` (default): ``x + eps * sign(w_c - w_y)`` — the gradient of the score *difference* between the
  target and the current class, the optimal L∞ step for that pair (closed-form flip radius
  ``(s_y - s_c) / ||w_c - w_y||_1`` when the box is inactive);
* ``"l2"``: ``x + eps * (w_c - w_y) / ||w_c - w_y||_2``, the L2 analogue.

The weights are read off any affine model as its (constant) input Jacobian, so it works on
:func:`advlab.nonneural.from_sklearn` classifiers, ``nn.Linear`` networks and normalised wrappers alike.
"""

from __future__ import annotations

import io as _io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import io, validation
from advlab.attacks.base import prepare_inputs
from advlab.threat import ThreatModel

DIRECTIONS = ("margin", "template", "l2")
_AFFINE_RTOL = 1e-4  # relative tolerance of the affinity check


@dataclass
class LinearFoolingResult:
    """What :func:`fool_linear` returns.

    Attributes:
        x_adv: the pushed inputs ``(N, ...)``, inside the box.
        target: the class each input was pushed toward ``(N,)``.
        pred: the model's prediction on ``x_adv`` ``(N,)``.
        success: ``pred == target``.
        templates: class templates ``w_k`` reshaped to the input shape and min-max scaled to ``[0, 1]`` per
            class, ready for ``imshow`` ``(K, ...)``.
        weights: the raw weights ``W`` ``(K, D)`` and ``bias`` ``(K,)`` of the affine model.
        flip_eps: per example, the closed-form L∞ (or L2) radius at which the target score reaches the source
            class score when the box is inactive (``"margin"``/``"l2"`` directions), else ``None``.
    """

    x_adv: torch.Tensor
    target: torch.Tensor
    pred: torch.Tensor
    success: torch.Tensor
    templates: torch.Tensor
    weights: torch.Tensor
    bias: torch.Tensor
    flip_eps: torch.Tensor | None


def affine_weights(
    model: nn.Module, input_shape: tuple[int, ...], *, device: Any = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` with ``model(x) = W @ x.flatten() + b`` for an affine model, read off its input Jacobian.

    Raises:
        ValueError: the model is not affine (its outputs at a random point disagree with ``W x + b``).
    """
    d = int(torch.tensor(input_shape).prod())
    zero = torch.zeros((1, *input_shape), device=device)
    with torch.no_grad():
        b = model(zero)[0].double()
    jac = torch.autograd.functional.jacobian(lambda z: model(z.reshape(1, *input_shape))[0], zero.reshape(d))
    w = jac.double().reshape(b.shape[0], d)
    probe = torch.linspace(0.1, 0.9, d, device=device, dtype=torch.float32)
    with torch.no_grad():
        got = model(probe.reshape(1, *input_shape))[0].double()
    want = w @ probe.double() + b
    if not torch.allclose(got, want, rtol=_AFFINE_RTOL, atol=_AFFINE_RTOL * float(want.abs().max().clamp_min(1.0))):
        raise ValueError(
            "model: expected a linear (affine) classifier such as advlab.nonneural.from_sklearn(LogisticRegression) "
            "or nn.Sequential(nn.Flatten(), nn.Linear(...)); its outputs are not W x + b. Use a gradient attack "
            "(advlab.attacks.fgsm) for non-linear models."
        )
    return w, b


def fool_linear(
    model: nn.Module,
    x: Any,
    y: Any,
    target: Any,
    eps: float,
    *,
    direction: str = "margin",
) -> LinearFoolingResult:
    """Push each input toward its ``target`` class along the linear class templates (one step, no iteration).

    Args:
        model: an affine classifier (``advlab.Classifier`` or ``nn.Module``) returning logits.
        x: inputs ``(N, ...)`` inside the model's bounds.
        y: the current (true) classes ``(N,)``, used by the ``"margin"`` and ``"l2"`` directions.
        target: the classes to push toward ``(N,)`` (or one int for all).
        eps: step size: L∞ radius for ``"margin"``/``"template"``, L2 radius for ``"l2"``.
        direction: ``"margin"`` (sign(w_c - w_y)), ``"template"`` (sign(w_c), the blog post's gradient of the
            target score) or ``"l2"``.

    Returns:
        LinearFoolingResult with the pushed inputs, predictions and the class templates for plotting.

    Raises:
        ValueError: non-affine model, bad eps, direction, labels or inputs.

    References:
        Karpathy, "Breaking Linear Classifiers on ImageNet", blog post, 2015;
        Goodfellow, Shlens & Szegedy, arXiv:1412.6572 (the linear explanation and the sign step).

    Examples:
        >>> clf = from_sklearn(LogisticRegression(max_iter=1000).fit(xf, y), input_shape=(1, 8, 8))
        >>> out = fool_linear(clf, x[:10], y[:10], target=3, eps=0.1)
        >>> out.success.float().mean(), out.templates.shape   # (10, 1, 8, 8)
    """
    validation.check_choice("direction", direction, DIRECTIONS)
    eps = validation.check_float("eps", eps, minimum=0.0)
    bounds = getattr(model, "bounds", (0.0, 1.0))
    threat = ThreatModel("l2" if direction == "l2" else "linf", eps, bounds)
    clf, x_t, y_t, threat = prepare_inputs(model, x, y, threat)
    if isinstance(target, int):
        target = torch.full_like(y_t, target)
    target_t = torch.as_tensor(target).to(y_t.device).long()
    with clf.attack_mode():
        w, b = affine_weights(clf, tuple(x_t.shape[1:]), device=x_t.device)
        k = w.shape[0]
        validation.check_labels(target_t, x_t.shape[0], k, name="target")
        validation.check_labels(y_t, x_t.shape[0], k)
        flat = x_t.reshape(x_t.shape[0], -1).double()
        diff = w[target_t] - w[y_t]  # gradient of s_c - s_y
        if direction == "template":
            step = w[target_t].sign()
            flip = None
        elif direction == "margin":
            step = diff.sign()
            gap = ((w[y_t] - w[target_t]) * flat).sum(1) + b[y_t] - b[target_t]
            flip = gap / diff.abs().sum(1).clamp_min(1e-12)
        else:
            norms = diff.norm(dim=1, keepdim=True).clamp_min(1e-12)
            step = diff / norms
            gap = ((w[y_t] - w[target_t]) * flat).sum(1) + b[y_t] - b[target_t]
            flip = gap / norms[:, 0]
        x_adv = threat.project((flat + eps * step).to(x_t.dtype).reshape(x_t.shape), x_t)
        with torch.no_grad():
            pred = clf(x_adv).argmax(1)
    lo = w.amin(1, keepdim=True)
    hi = w.amax(1, keepdim=True)
    templates = ((w - lo) / (hi - lo).clamp_min(1e-12)).float().reshape(k, *x_t.shape[1:])
    return LinearFoolingResult(
        x_adv=x_adv,
        target=target_t,
        pred=pred,
        success=pred == target_t,
        templates=templates.cpu(),
        weights=w.cpu(),
        bias=b.cpu(),
        flip_eps=None if flip is None else flip.float().cpu(),
    )


def plot_linear_fooling(
    result: LinearFoolingResult, x: torch.Tensor, path: str | Path, *, max_examples: int = 8
) -> Path:
    """Save a figure: the class templates on top, then clean inputs and their pushed versions (matplotlib Agg).

    Args:
        result: the output of :func:`fool_linear`.
        x: the clean inputs that were pushed, ``(N, C, H, W)`` images.
        path: PNG file to write (atomically).
        max_examples: how many clean/pushed pairs to show.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def img(t: torch.Tensor):
        t = t.detach().cpu().float()
        return (t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)).numpy()

    k = result.templates.shape[0]
    n = min(max_examples, x.shape[0])
    cols = max(k, n)
    fig, axes = plt.subplots(3, cols, figsize=(1.2 * cols, 4.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c in range(k):
        axes[0, c].imshow(img(result.templates[c]), cmap="gray")
        axes[0, c].set_title(f"w[{c}]", fontsize=7)
    for i in range(n):
        axes[1, i].imshow(img(x[i]), cmap="gray", vmin=0, vmax=1)
        axes[2, i].imshow(img(result.x_adv[i]), cmap="gray", vmin=0, vmax=1)
        axes[2, i].set_title(f"->{int(result.target[i])}: {int(result.pred[i])}", fontsize=7)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return io.write_bytes(path, buf.getvalue())
