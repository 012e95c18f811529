"""STRIP (Gao et al. 2019): a triggered input keeps its backdoor label under superimposition; a clean one does not.

At test time each input is superimposed with ``N`` clean images drawn from a held-out pool (pixel-wise sum,
saturated at the input bounds, as the paper's ``cv2.addWeighted(x, 1, overlay, 1, 0)`` on 8-bit images does),
and the entropy of the model's predictions over the ``N`` blends is measured. The trigger dominates whatever it
is blended with, so triggered inputs have low entropy. The detection threshold is the ``frr`` quantile of a normal
distribution fitted to the entropies of clean held-out inputs (the paper's rule; ``frr`` = 1% there): an input
below it is rejected as triggered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Annotated

import torch
from torch import nn

from advlab import validation
from advlab.models import predict
from advlab.rng import ExampleRNG
from advlab.settings import Range, settings_of, validate_all

OVERLAYS = 100
"""Clean images superimposed on each input (Gao et al.: N = 100)."""
FALSE_REJECTION = 0.01
"""The share of clean inputs the threshold may reject (Gao et al.: 1%)."""
STRIP_BATCH = 2000
"""Blended images per forward pass."""


def strip_entropy(
    model: nn.Module,
    x: torch.Tensor,
    pool: torch.Tensor,
    *,
    n_overlays: int = OVERLAYS,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    stage: str = "strip",
) -> torch.Tensor:
    """The STRIP entropy of each input: the mean over ``n_overlays`` blends of the predictions' entropy (bits).

    Overlays are drawn with replacement from ``pool`` by per-example streams keyed by ``(seed, stage, row)``, so an
    input's overlays do not depend on the batch it is in (a clean input and its triggered copy at the same row get
    the same overlays).

    Args:
        model: the classifier, in eval mode.
        x: the inputs, ``(N, C, H, W)``.
        pool: the clean held-out images overlaid, ``(M, C, H, W)``.
        n_overlays: blends per input.
        bounds: the input range the sum is saturated to.
        seed: seed of the overlay draws.
        stage: the label of the draws (different stages draw different overlays).

    Returns:
        The entropies, ``(N,)``, on the CPU.
    """
    if pool.shape[0] == 0 or tuple(pool.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"pool: expected clean images of shape (M, {', '.join(map(str, x.shape[1:]))}), got {tuple(pool.shape)}"
        )
    chunk = max(1, STRIP_BATCH // n_overlays)
    out = []
    for start in range(0, x.shape[0], chunk):
        ids = torch.arange(start, min(start + chunk, x.shape[0]))
        picks = ExampleRNG(seed, stage, ids).randint(0, pool.shape[0], (ids.shape[0], n_overlays))
        blends = (x[ids, None] + pool[picks].to(x.device)).clamp(bounds[0], bounds[1]).flatten(0, 1)
        probs = predict(model, blends, batch_size=STRIP_BATCH, logits=True).float().softmax(1).cpu()
        entropy = -(probs * probs.clamp_min(1e-12).log2()).sum(1)
        out.append(entropy.reshape(ids.shape[0], n_overlays).mean(1))
    return torch.cat(out) if out else torch.zeros(0)


def strip_threshold(clean_entropy: torch.Tensor, frr: float = FALSE_REJECTION) -> float:
    """The entropy below which an input is rejected: the ``frr`` quantile of a normal fit to clean entropies.

    Args:
        clean_entropy: STRIP entropies of clean held-out inputs (at least two).
        frr: the false rejection rate the threshold allows.

    Returns:
        The threshold.

    Examples:
        >>> round(strip_threshold(torch.tensor([1.0, 2.0, 3.0]), frr=0.5), 3)
        2.0
    """
    if clean_entropy.numel() < 2:
        raise ValueError("clean_entropy: at least two clean inputs are needed to fit the threshold")
    mean, std = float(clean_entropy.double().mean()), float(clean_entropy.double().std())
    return NormalDist(mean, max(std, 1e-12)).inv_cdf(frr)


@dataclass(frozen=True)
class StripResult:
    """STRIP on clean and triggered test inputs.

    Attributes:
        threshold: the entropy below which inputs are rejected.
        clean_entropy: entropies of the clean test inputs.
        triggered_entropy: entropies of the triggered test inputs.
        far: false acceptance rate: share of triggered inputs accepted (entropy >= threshold).
        frr: false rejection rate: share of clean inputs rejected.
    """

    threshold: float
    clean_entropy: torch.Tensor
    triggered_entropy: torch.Tensor

    @property
    def far(self) -> float:
        """Share of triggered inputs let through."""
        return (
            float((self.triggered_entropy >= self.threshold).float().mean())
            if self.triggered_entropy.numel()
            else math.nan
        )

    @property
    def frr(self) -> float:
        """Share of clean inputs rejected."""
        return float((self.clean_entropy < self.threshold).float().mean()) if self.clean_entropy.numel() else math.nan

    def accepted(self) -> torch.Tensor:
        """Which triggered inputs pass the detector (a boolean vector)."""
        return self.triggered_entropy >= self.threshold


def strip(
    model: nn.Module,
    x_clean: torch.Tensor,
    x_triggered: torch.Tensor,
    pool: torch.Tensor,
    *,
    n_overlays: Annotated[int, Range(1)] = OVERLAYS,
    frr: Annotated[float, Range(0, 1, strict_min=True, strict_max=True)] = FALSE_REJECTION,
    seed: Annotated[int, Range(0)] = 0,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> StripResult:
    """Calibrate STRIP on the clean ``pool`` and measure it on clean and triggered test inputs.

    The threshold is fitted to the entropies of the pool's own images (each superimposed with pool images), the
    defender's held-out clean data; the test inputs are then scored with overlays from the same pool.

    Args:
        model: the (possibly backdoored) classifier, in eval mode.
        x_clean: clean test inputs.
        x_triggered: triggered test inputs.
        pool: held-out clean images: the overlays and the calibration set.
        n_overlays: clean images superimposed on each input (100 in the paper).
        frr: the false rejection rate the threshold is set for (0.01 in the paper).
        seed: seed of the overlay draws.
        bounds: the input range.

    Returns:
        The threshold and the entropies, with the measured FAR and FRR.

    References:
        Gao, Xu, Wang, Chen, Ranasinghe & Nepal, "STRIP: A Defence Against Trojan Attacks on Deep Neural
        Networks", ACSAC 2019, arXiv:1902.06531, Section 4.

    Examples:
        >>> result = strip(model, x_test, trigger.apply(x_test), x_holdout)
        >>> result.far, result.frr
    """
    given = {"n_overlays": n_overlays, "frr": frr, "seed": seed}
    validate_all("strip", settings_of(strip), given)
    bounds = validation.check_bounds("bounds", bounds)
    calibration = strip_entropy(model, pool, pool, n_overlays=n_overlays, bounds=bounds, seed=seed, stage="calibrate")
    threshold = strip_threshold(calibration, frr)
    clean = strip_entropy(model, x_clean, pool, n_overlays=n_overlays, bounds=bounds, seed=seed)
    triggered = strip_entropy(model, x_triggered, pool, n_overlays=n_overlays, bounds=bounds, seed=seed)
    return StripResult(threshold=threshold, clean_entropy=clean, triggered_entropy=triggered)
