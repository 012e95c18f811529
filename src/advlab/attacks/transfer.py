"""The gradient of the transfer-boosting attacks (DI, TI, NI, SI, VMI/VNI) around the shared iterative loop.

Each of these attacks is MI-FGSM (:mod:`advlab.attacks.mifgsm`) with another gradient: taken through a random
resize-and-pad of the input (input diversity), smoothed by a Gaussian kernel (translation invariance), taken at a
Nesterov lookahead point, averaged over scaled copies of the input (scale invariance), or corrected by the gradient's
variance around the iterate (variance tuning). :class:`Boosts` holds these knobs, :class:`TransferGradient` computes
the gradient they describe, and :func:`transfer_core` runs it in :func:`advlab.attacks.iterative.iterate`, so the
step, the momentum and the projection are the loop every iterative attack shares. The knobs combine: the registered
attacks (``difgsm``, ``tifgsm``, ``nifgsm``, ``sinifgsm``, ``vmifgsm``, ``vnifgsm``) expose their paper's knobs and
the combinations their papers report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import AttackOutput, draw_per_row, is_keyed, loss_and_grad
from advlab.attacks.iterative import iterate
from advlab.losses import LossFn
from advlab.rng import RNG
from advlab.settings import Check, Range
from advlab.threat import ThreatModel, per_example

DIVERSITY_DRAWS = 4
"""Uniform numbers per example and copy for input diversity: apply or not, resized side, top and left padding."""

ResizeRate = Annotated[float, Range(0, 1, strict_min=True)]
"""The annotation of ``resize_rate``: the smallest resized side as a fraction of the input's, in (0, 1]."""


def check_odd(name: str, value: int) -> int:
    """``value`` if it is a positive odd int (a kernel with a centre pixel), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name}: expected a positive odd int (the kernel needs a centre pixel), got {value!r}")
    return value


KernelSize = Annotated[int, Check(check_odd)]
"""The annotation of ``kernel_size``: a positive odd int."""


@dataclass(frozen=True)
class Boosts:
    """The gradient transformations of the transfer-boosting attacks (the defaults transform nothing).

    Attributes:
        diversity_prob: probability p that an example's input is randomly resized and padded (Xie et al. 2019).
        resize_rate: the resized side is drawn uniformly from ``[int(side * resize_rate), side)``.
        kernel_size: side of the Gaussian kernel the gradient is convolved with (Dong et al. 2019); 1 is none.
        kernel_sigmas: the kernel spans ``[-kernel_sigmas, kernel_sigmas]`` standard deviations.
        scales: number of scaled copies ``x / 2^i``, ``i < scales``, the gradient is averaged over (Lin et al. 2020).
        nesterov: take the gradient at the lookahead point ``x + step_size * momentum * g`` (Lin et al. 2020).
        samples: neighbours whose mean gradient tunes the next step's gradient (Wang & He 2021); 0 is none.
        beta: neighbours are drawn uniformly from the linf ball of radius ``beta * eps``.
    """

    diversity_prob: float = 0.0
    resize_rate: float = 0.9
    kernel_size: int = 1
    kernel_sigmas: float = 3.0
    scales: int = 1
    nesterov: bool = False
    samples: int = 0
    beta: float = 1.5

    @property
    def spatial(self) -> bool:
        """Whether the boosts need image inputs ``(N, C, H, W)``."""
        return self.diversity_prob > 0 or self.kernel_size > 1


def gaussian_kernel(size: int, sigmas: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``size x size`` Gaussian kernel of translation-invariant attacks, summing to one.

    The 1-D profile is the normal density at ``size`` points evenly spaced over ``[-sigmas, sigmas]`` (Dong et al.'s
    ``gkern``); the kernel is its outer product, normalised.

    Args:
        size: side of the kernel (odd).
        sigmas: half-width of the kernel in standard deviations.
        dtype: floating dtype of the result.

    Returns:
        A ``(size, size)`` tensor.

    Examples:
        >>> gaussian_kernel(1, 3.0)
        tensor([[1.]])
    """
    t = torch.linspace(-sigmas, sigmas, size, dtype=torch.float64)
    profile = torch.exp(-0.5 * t * t)
    kernel = torch.outer(profile, profile)
    return (kernel / kernel.sum()).to(dtype)


def diverse_inputs(x: torch.Tensor, u: torch.Tensor, resize_rate: float, prob: float) -> torch.Tensor:
    """Input diversity: each row, with probability ``prob``, resized down and zero-padded back to its size.

    Row ``i`` is transformed when ``u[i, 0] < prob``; its resized side is ``low + floor(u[i, 1] * (side - low))``
    with ``low = int(side * resize_rate)`` (bilinear, as ``F.interpolate(..., align_corners=False)``), placed at
    ``floor(u[i, 2] * (H - h))`` from the top and ``floor(u[i, 3] * (W - w))`` from the left. All rows go through one
    ``grid_sample``, so rows of different sizes need no loop; it is differentiable in ``x``.

    Args:
        x: images ``(N, C, H, W)``.
        u: uniform numbers in ``[0, 1)``, shape ``(N, 4)``.
        resize_rate: smallest resized side as a fraction of the side, in ``(0, 1]``.
        prob: probability of transforming a row.

    Returns:
        The transformed images, shape of ``x``.

    References:
        Xie et al., "Improving Transferability of Adversarial Examples with Input Diversity", arXiv:1803.06978.

    Examples:
        >>> x_div = diverse_inputs(x, torch.rand(x.shape[0], 4), 0.9, 0.5)
    """
    _, _, h, w = x.shape
    sizes = torch.tensor([h, w], dtype=u.dtype, device=u.device)
    low = torch.tensor([int(h * resize_rate), int(w * resize_rate)], dtype=u.dtype, device=u.device)
    resized = low + torch.floor(u[:, 1:2] * (sizes - low))  # (N, 2): rows, columns
    offset = torch.floor(u[:, 2:4] * (sizes - resized))  # (N, 2): top, left
    grids, inside = [], []
    for axis, side in enumerate((h, w)):
        pos = torch.arange(side, dtype=u.dtype, device=u.device)[None] - offset[:, axis : axis + 1]  # (N, side)
        inside.append((pos >= 0) & (pos < resized[:, axis : axis + 1]))
        src = ((pos + 0.5) * side / resized[:, axis : axis + 1] - 0.5).clamp_min(0)  # interpolate's source index
        grids.append((2 * src + 1) / side - 1)  # grid_sample's coordinate of that index (align_corners=False)
    grid = torch.stack(torch.broadcast_tensors(grids[1][:, None, :], grids[0][:, :, None]), dim=-1)
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    mask = (inside[0][:, :, None] & inside[1][:, None, :])[:, None]
    out = out * mask.to(x.dtype)
    apply = u[:, 0] < prob
    return torch.where(per_example(apply, x), out, x)


class TransferGradient:
    """The gradient of one run of a transfer-boosting attack: a :data:`~advlab.attacks.iterative.GradientFn`.

    Per step: the lookahead point (NI), the mean over scaled copies (SI) of the loss gradient through input
    diversity (DI), plus the variance term of the previous step (VMI), smoothed by the kernel (TI). The variance for
    the next step is drawn around the iterate itself.

    Args:
        model: the model in attack mode.
        labels: true or target labels ``(N,)``.
        targeted: whether ``labels`` are targets.
        threat: the threat model (its eps scales the variance neighbourhood).
        loss_fn: the loss to ascend.
        boosts: which transformations to apply.
        momentum: the loop's momentum mu (the lookahead's length).
        step_size: the loop's step size (the lookahead's length).
        rng: randomness for input diversity and the variance neighbours.
    """

    def __init__(
        self,
        model: nn.Module,
        labels: torch.Tensor,
        targeted: bool,
        threat: ThreatModel,
        *,
        loss_fn: LossFn,
        boosts: Boosts,
        momentum: float,
        step_size: float,
        rng: RNG,
    ) -> None:
        self.model, self.labels, self.targeted, self.threat = model, labels, targeted, threat
        self.loss_fn, self.boosts, self.momentum, self.step_size, self.rng = loss_fn, boosts, momentum, step_size, rng
        self.variance: torch.Tensor | None = None
        self.kernel: torch.Tensor | None = None

    def __call__(
        self, x_adv: torch.Tensor, g: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x_at = self.lookahead(x_adv, g)
        loss, grad, logits = self.copies_gradient(x_adv, x_at)
        if self.boosts.samples > 0:
            tuned = grad if self.variance is None else grad + self.variance
            self.variance = self.neighbour_gradient(x_adv) - grad
            grad = tuned
        if self.boosts.kernel_size > 1:
            grad = self.smooth(grad)
        return loss, grad, logits

    def lookahead(self, x_adv: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor | None:
        """NI's point ``x + step_size * mu * m`` with ``m`` the momentum in units of the step (``None``: no lookahead).

        The loop accumulates L1-normalised gradients; Lin et al.'s code accumulates mean-abs-normalised ones, ``d``
        times larger (``d`` values per example), whose linf step is ``step_size * m``; for l2 the lookahead is that
        divided by ``sqrt(d)``, a step of about ``step_size`` per accumulated gradient.
        """
        if not self.boosts.nesterov or g is None or self.momentum == 0:
            return None
        d = x_adv[0].numel()
        scale = d if self.threat.norm == "linf" else math.sqrt(d)
        return x_adv + (self.step_size * self.momentum * scale) * g

    def copies_gradient(
        self, x_adv: torch.Tensor, x_at: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Loss and gradient at ``x_adv`` (or the lookahead ``x_at``) through the scaled and diversified copies."""
        b = self.boosts
        if b.scales == 1 and b.diversity_prob == 0 and x_at is None:
            return loss_and_grad(self.model, x_adv, self.labels, self.targeted, self.loss_fn)
        x_var = x_adv.detach().requires_grad_(True)
        point = x_var if x_at is None else x_var + (x_at - x_adv).detach()
        copies = torch.cat([point / 2**i for i in range(b.scales)]) if b.scales > 1 else point
        if b.diversity_prob > 0:
            copies = diverse_inputs(copies, self.diversity_draws(x_adv), b.resize_rate, b.diversity_prob)
        logits = self.model(copies)
        losses = self.loss_fn(logits, self.labels.repeat(b.scales), self.targeted)
        (grad,) = torch.autograd.grad(losses.sum(), x_var)
        loss = losses.detach().view(b.scales, -1).mean(0)
        exact = x_at is None and b.diversity_prob == 0  # the first copy is x_adv itself
        return loss, grad / b.scales, logits[: x_adv.shape[0]].detach() if exact else None

    def diversity_draws(self, x: torch.Tensor) -> torch.Tensor:
        """``(scales * N, 4)`` uniform numbers, each example's from its own stream when the streams are keyed."""
        n, m = x.shape[0], self.boosts.scales
        u = self.rng.rand((n, m * DIVERSITY_DRAWS), device=x.device)
        return u.view(n, m, DIVERSITY_DRAWS).transpose(0, 1).reshape(m * n, DIVERSITY_DRAWS)

    def neighbour_gradient(self, x_adv: torch.Tensor) -> torch.Tensor:
        """VMI's ``V(x)``: the mean loss gradient at ``samples`` points uniform in the linf ball ``beta * eps`` of ``x``."""
        n, k = x_adv.shape[0], self.boosts.samples
        shape = (n, k, *x_adv.shape[1:])
        if is_keyed(self.rng):
            u = draw_per_row(self.rng, shape, "rand", dtype=x_adv.dtype, device=x_adv.device)  # type: ignore[arg-type]
        else:
            u = self.rng.rand(shape, dtype=x_adv.dtype, device=x_adv.device)
        radius = self.boosts.beta * self.threat.eps
        points = (x_adv[:, None] + radius * (2 * u - 1)).flatten(0, 1)
        labels = self.labels.repeat_interleave(k)
        _, grad, _ = loss_and_grad(self.model, points, labels, self.targeted, self.loss_fn)
        return grad.view(shape).mean(1)

    def smooth(self, grad: torch.Tensor) -> torch.Tensor:
        """TI: each channel of the gradient convolved with the Gaussian kernel (zero padding, same size)."""
        channels, size = grad.shape[1], self.boosts.kernel_size
        if self.kernel is None:
            k = gaussian_kernel(size, self.boosts.kernel_sigmas, grad.dtype).to(grad.device)
            self.kernel = k.expand(channels, 1, size, size).contiguous()
        return F.conv2d(grad, self.kernel, padding=size // 2, groups=channels)


def check_images(x: torch.Tensor, boosts: Boosts, name: str) -> None:
    """Input diversity and translation invariance act on images: refuse other inputs, naming the fix.

    Raises:
        ValueError: ``x`` is not ``(N, C, H, W)`` and a spatial boost is on.
    """
    if boosts.spatial and x.dim() != 4:
        raise ValueError(
            f"x: {name} resizes or smooths images, so it needs inputs of shape (N, C, H, W), got {tuple(x.shape)}; "
            "set diversity_prob=0 and kernel_size=1, or use mifgsm for other inputs"
        )


def transfer_core(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    momentum: float,
    loss_fn: LossFn,
    boosts: Boosts,
    generator: RNG,
    name: str,
) -> AttackOutput:
    """Run MI-FGSM's loop with the boosted gradient (the core behind the registered transfer attacks)."""
    check_images(x, boosts, name)
    gradient = TransferGradient(
        model, labels, targeted, threat, loss_fn=loss_fn, boosts=boosts, momentum=momentum, step_size=step_size,
        rng=generator,
    )  # fmt: skip
    run = iterate(
        model, x, x, labels, targeted, threat, steps=steps, step_size=step_size, loss_fn=loss_fn,
        momentum=momentum, gradient=gradient, name=name,
    )  # fmt: skip
    return AttackOutput(run.x_adv, loss_trace=run.trace)


def default_step_size(threat: ThreatModel, steps: int, step_size: float | None) -> float:
    """``eps / steps``, the step of MI-FGSM and of every transfer paper (the iterates end on the ball's surface)."""
    return threat.eps / steps if step_size is None else step_size
