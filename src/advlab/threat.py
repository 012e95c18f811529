"""The threat model: which perturbations are allowed (norm ball of radius eps, intersected with the input box).

Every attack's output is re-projected by :meth:`ThreatModel.project` at the framework boundary, so no
attack writes its own clamp. All geometry that depends on the norm lives here: projection, random starts,
steepest-ascent directions and distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from advlab import validation
from advlab.devices import to_device
from advlab.rng import RNG, GeneratorRNG, as_rng

NORMS = ("linf", "l2", "l1")
"""Norms every :class:`ThreatModel` supports (``"l0"`` is accepted by attacks that declare it)."""

_TINY = 1e-12  # guards divisions by a norm that may be zero

DEFAULT_BOUNDS = (0.0, 1.0)
"""The box of a threat model without bounds when no model gives one (pixels in [0, 1]); also the bounds of a plain
``torch.nn.Module`` wrapped by an attack (:func:`advlab.models.as_classifier`)."""

UNBOUNDED_SCALE = 1.0
"""The size of the input range where the box is infinite (one standard deviation of standardised features):
:attr:`ThreatModel.scale` of an unbounded box, and how far an L0 random start moves a feature on an infinite
side."""


def _global_rng(device: torch.device) -> GeneratorRNG:
    """Torch's global generator of ``device`` (what ``torch.rand(..., generator=None)`` draws from)."""
    if device.type == "cuda":
        return GeneratorRNG(
            torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
        )
    return GeneratorRNG(torch.default_generator)


def flatten(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(N,)`` vector so it broadcasts against ``like`` of shape ``(N, ...)``."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of ``delta`` (shape ``(N, ...)``) as a ``(N,)`` tensor."""
    flat = flatten(delta)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise ValueError(f"norm: expected one of {NORMS + ('l0',)}, got {norm!r}")


def project_l1_ball(delta: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """Euclidean projection of each example of ``delta`` onto the L1 ball of radius ``eps``.

    Sorting algorithm of Duchi et al. 2008 ("Efficient projections onto the l1-ball"), batched.
    ``eps`` is a float or a ``(N,)`` tensor. Examples already inside the ball come back unchanged; there is no
    shortcut for a batch that is inside entirely, whose test would cost attack loops a host synchronisation.
    """
    flat = flatten(delta)
    n, d = flat.shape
    eps_t = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device).expand(n)
    abs_flat = flat.abs()
    inside = abs_flat.sum(dim=1) <= eps_t
    mu, _ = abs_flat.sort(dim=1, descending=True)
    cumsum = mu.cumsum(dim=1)
    arange = torch.arange(1, d + 1, device=flat.device, dtype=flat.dtype)
    cond = mu - (cumsum - eps_t[:, None]) / arange > 0
    rho = cond.to(torch.int64).cumsum(dim=1).argmax(dim=1)  # last index where cond holds
    theta = (cumsum.gather(1, rho[:, None]).squeeze(1) - eps_t) / (rho + 1).to(flat.dtype)
    theta = theta.clamp_min(0)
    projected = flat.sign() * (abs_flat - theta[:, None]).clamp_min(0)
    out = torch.where(inside[:, None], flat, projected)
    return out.reshape(delta.shape)


DIRECTIONS = ("increase", "decrease", "both")
"""The directions a feature may change in under :class:`FeatureConstraints`."""


@dataclass(frozen=True)
class FeatureConstraints:
    """Which features an adversary may change, and how: binary values, one direction, a mask (Grosse et al. 2016).

    A malware author can add a permission or an API call to an app but not remove one without breaking it: the
    features are binary, they may only go from 0 to 1 (``direction="increase"``), and only some of them may change
    at all (``mutable``). The L0 budget (at most ``k`` changes) is the threat model's radius:
    ``ThreatModel("l0", k, (0, 1), constraints=FeatureConstraints())``. The threat model re-projects every
    attack's output onto these constraints (:meth:`ThreatModel.project`), as it does onto the box.

    Args:
        binary: features take only the two ends of the box (0 and 1); inputs with other values are refused
            and projected points are rounded to the nearer end.
        direction: ``"increase"`` (0 -> 1 only), ``"decrease"`` (1 -> 0 only) or ``"both"``.
        mutable: indices of the (flattened) features that may change; ``None``: all of them. A boolean mask
            converts with :meth:`from_mask`.

    References:
        Grosse et al., "Adversarial Perturbations Against Deep Neural Networks for Malware Classification",
        arXiv:1606.04435.

    Examples:
        >>> constraints = FeatureConstraints(direction="increase", mutable=(0, 3, 4))
        >>> threat = ThreatModel("l0", 2, (0.0, 1.0), constraints=constraints)
        >>> threat.describe()
        'L0 ≤ 2, binary, increase only, 3 mutable features'
    """

    binary: bool = True
    direction: str = "increase"
    mutable: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.binary, bool):
            raise TypeError(f"binary: expected True or False, got {type(self.binary).__name__}")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"direction: expected one of {DIRECTIONS}, got {self.direction!r}. "
                "Use 'increase' for features that may only be added (0 -> 1)."
            )
        if self.mutable is not None:
            indices = sorted({validation.check_int("mutable", i, minimum=0) for i in self.mutable})
            if not indices:
                raise ValueError("mutable: expected at least one feature index, got none; pass None to allow all")
            object.__setattr__(self, "mutable", tuple(indices))

    @classmethod
    def from_mask(cls, mask: Any, *, binary: bool = True, direction: str = "increase") -> FeatureConstraints:
        """Constraints whose mutable features are where the boolean ``mask`` (one entry per feature) is true.

        Args:
            mask: a boolean array or tensor, one entry per (flattened) feature.
            binary: see the class.
            direction: see the class.

        Examples:
            >>> FeatureConstraints.from_mask([True, False, True]).mutable
            (0, 2)
        """
        flat = torch.as_tensor(mask).reshape(-1)
        if flat.dtype != torch.bool:
            raise TypeError(f"mask: expected booleans, one per feature, got dtype {flat.dtype}")
        return cls(binary=binary, direction=direction, mutable=tuple(flat.nonzero().flatten().tolist()))

    def allowed(self, x: torch.Tensor, box: tuple[float, float]) -> torch.Tensor:
        """Per feature of the clean ``x`` (flattened, ``(N, d)``), whether it may change at all.

        Args:
            x: the clean batch ``(N, ...)``.
            box: ``(low, high)`` of the features.
        """
        flat = flatten(x)
        if self.direction == "increase":
            ok = flat < box[1]
        elif self.direction == "decrease":
            ok = flat > box[0]
        else:
            ok = torch.ones_like(flat, dtype=torch.bool)
        if self.mutable is not None:
            ok = ok & self.mask(flat.shape[1], flat.device)
        return ok

    def mask(self, d: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``(d,)`` boolean mask of the mutable features among ``d`` (all true without ``mutable``).

        Args:
            d: the number of features.
            device: where the mask is made.
        """
        keep = torch.zeros(d, dtype=torch.bool, device=device)
        if self.mutable is None:
            return keep.logical_not_()
        keep[torch.tensor([i for i in self.mutable if i < d], dtype=torch.long, device=device)] = True
        return keep

    def restrict(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta`` with the changes the constraints forbid set to zero (wrong direction, immutable feature).

        Args:
            delta: the perturbation ``(N, ...)``.
        """
        if self.direction == "increase":
            delta = delta.clamp_min(0)
        elif self.direction == "decrease":
            delta = delta.clamp_max(0)
        if self.mutable is not None:
            flat = flatten(delta)
            delta = (flat * self.mask(flat.shape[1], flat.device)).reshape(delta.shape)
        return delta

    def round(self, x_adv: torch.Tensor, box: tuple[float, float]) -> torch.Tensor:
        """``x_adv`` rounded to the nearer end of ``box`` where the features are binary (half-way goes up).

        Args:
            x_adv: points inside the box.
            box: ``(low, high)``.
        """
        if not self.binary:
            return x_adv
        lo, hi = box
        return torch.where(x_adv - lo >= (hi - lo) / 2, torch.full_like(x_adv, hi), torch.full_like(x_adv, lo))

    def satisfied(self, x_adv: torch.Tensor, x: torch.Tensor, box: tuple[float, float]) -> torch.Tensor:
        """Per example, whether ``x_adv`` keeps the constraints around the clean ``x`` (``(N,)`` bool).

        Args:
            x_adv: the perturbed points.
            x: the clean points.
            box: ``(low, high)``.
        """
        delta = x_adv - x
        same = flatten(self.restrict(delta) == delta).all(1)
        if self.binary:
            same &= flatten((x_adv == box[0]) | (x_adv == box[1])).all(1)
        return same

    def check(self, x: torch.Tensor, eps: float, box: tuple[float, float]) -> None:
        """Refuse clean inputs the constraints cannot apply to: non-binary values, indices past the features, a
        budget above the number of features.

        Args:
            x: the clean batch.
            eps: the L0 budget.
            box: ``(low, high)``.

        Raises:
            ValueError: naming what is wrong and the fix.
        """
        d = x[0].numel()
        if self.binary:
            validation.check_binary(x, box)
        if self.mutable is not None and self.mutable[-1] >= d:
            raise ValueError(
                f"mutable: feature index {self.mutable[-1]} is out of range for inputs with {d} features "
                f"(valid: 0..{d - 1}); build the mask for these inputs"
            )
        if eps > d:
            raise ValueError(
                f"eps: an L0 budget of {eps:g} changes is above the number of features ({d}); "
                f"choose a budget between 1 and {d}"
            )

    def describe(self) -> str:
        """Human-readable form for reports, e.g. ``binary, increase only, 30 mutable features``."""
        parts = ["binary"] if self.binary else []
        parts.append("any direction" if self.direction == "both" else f"{self.direction} only")
        parts.append("all features mutable" if self.mutable is None else f"{len(self.mutable)} mutable features")
        return ", ".join(parts)


@dataclass(frozen=True)
class ThreatModel:
    """Perturbations of norm at most ``eps`` that keep the input inside ``bounds``.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (``"l0"`` for attacks that declare it).
        eps: radius of the ball, in raw input units (before any normalisation of the model).
        bounds: ``(low, high)`` of valid inputs, e.g. ``(0.0, 1.0)`` for images. Either side may be infinite
            (``(-inf, inf)`` for standardised tabular features): the norm ball alone then bounds the set. ``None``
            (the default) means *the model's bounds*: attacks resolve it to the classifier's ``bounds`` (a plain
            ``torch.nn.Module`` has ``(0, 1)``), and ``evaluate``, the CLI and the reports use the classifier's
            bounds. The geometry called on an unresolved threat model itself (:meth:`project`,
            :meth:`random_start`, :meth:`contains`, ...) uses :data:`DEFAULT_BOUNDS`; :meth:`resolve` gives the
            threat model with a model's bounds.

        constraints: :class:`FeatureConstraints` (binary features, one direction of change, a mask of mutable
            features) on top of the L0 budget; only with ``norm="l0"`` and a finite box, and only attacks whose
            capability flags say ``constraints`` accept them. ``None`` (the default): no constraints.

    Examples:
        >>> threat = ThreatModel("linf", 8 / 255)
        >>> x_adv = threat.project(x + noise, x)
        >>> threat.distance(x_adv, x).max() <= 8 / 255
        >>> tabular = ThreatModel("l2", 0.5, (float("-inf"), float("inf")))
        >>> malware = ThreatModel("l0", 20, (0.0, 1.0), constraints=FeatureConstraints(direction="increase"))
    """

    norm: str
    eps: float
    bounds: tuple[float, float] | None = None
    constraints: FeatureConstraints | None = None

    def __post_init__(self) -> None:
        validation.check_threat_args(self.norm, self.eps, DEFAULT_BOUNDS if self.bounds is None else self.bounds)
        object.__setattr__(self, "eps", float(self.eps))
        if self.bounds is not None:
            object.__setattr__(self, "bounds", validation.check_bounds("bounds", self.bounds))
        if self.constraints is not None:
            self._check_constraints()

    def _check_constraints(self) -> None:
        if not isinstance(self.constraints, FeatureConstraints):
            raise TypeError(
                f"constraints: expected advlab.threat.FeatureConstraints or None, got {type(self.constraints).__name__}"
            )
        if self.norm != "l0":
            raise ValueError(
                f"constraints: feature constraints count changed features; use norm 'l0' with eps the largest number "
                f"of changes (ThreatModel('l0', 20, (0, 1), constraints=...)), got norm {self.norm!r}"
            )
        if not self.bounded:
            raise ValueError(
                f"constraints: feature constraints need a finite box (the two values of a binary feature), got "
                f"bounds {self.box}; pass bounds=(0.0, 1.0)"
            )

    @property
    def box(self) -> tuple[float, float]:
        """The box the geometry uses: ``bounds``, or :data:`DEFAULT_BOUNDS` while they are the model's."""
        return DEFAULT_BOUNDS if self.bounds is None else self.bounds

    @property
    def bounded(self) -> bool:
        """Whether both sides of the box are finite."""
        return math.isfinite(self.box[0]) and math.isfinite(self.box[1])

    @property
    def scale(self) -> float:
        """The size of the input range that step rules are measured in: the box width, or
        :data:`UNBOUNDED_SCALE` when a side is infinite."""
        return self.box[1] - self.box[0] if self.bounded else UNBOUNDED_SCALE

    def resolve(self, bounds: tuple[float, float]) -> ThreatModel:
        """This threat model with ``bounds`` (a model's) when it has none of its own; itself otherwise.

        Args:
            bounds: the model's ``(low, high)``.

        Examples:
            >>> ThreatModel("linf", 0.1).resolve((-1.0, 1.0)).bounds
            (-1.0, 1.0)
        """
        return self if self.bounds is not None else ThreatModel(self.norm, self.eps, bounds, self.constraints)

    # ------------------------------------------------------------------ geometry
    def with_eps(self, eps: float) -> ThreatModel:
        """The same threat model with another radius."""
        return ThreatModel(self.norm, eps, self.bounds, self.constraints)

    def clip_box(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp ``x`` into the input box (a side that is infinite clamps nothing)."""
        return x.clamp(self.box[0], self.box[1])

    def project_delta(self, delta: torch.Tensor, eps: torch.Tensor | float | None = None) -> torch.Tensor:
        """Project a perturbation onto the norm ball (without the box). ``eps`` may be per example."""
        eps = self.eps if eps is None else eps
        if self.norm == "linf":
            if isinstance(eps, torch.Tensor):
                e = per_example(eps.to(delta.dtype), delta)
                return torch.maximum(torch.minimum(delta, e), -e)
            return delta.clamp(-eps, eps)
        if self.norm == "l2":
            norms = flatten(delta).norm(p=2, dim=1)
            eps_t = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
            factor = torch.clamp(eps_t / (norms + _TINY), max=1.0)
            return delta * per_example(factor, delta)
        if self.norm == "l1":
            return project_l1_ball(delta, eps)
        if self.norm == "l0":
            k = int(eps) if not isinstance(eps, torch.Tensor) else int(eps.max().item())
            flat = flatten(delta)
            if k >= flat.shape[1]:
                return delta
            keep = flat.abs().topk(k, dim=1).indices
            mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, keep, True)
            return (flat * mask).reshape(delta.shape)
        raise AssertionError(self.norm)  # unreachable: validated in __post_init__

    def project(self, x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor | float | None = None) -> torch.Tensor:
        """Project ``x_adv`` onto {x + delta : |delta| <= eps} intersected with the box.

        The ball projection is applied first and the box clamp second. Clamping moves every coordinate of
        ``delta`` toward zero (``x`` itself is in the box), so the result is inside both sets: exactly in the
        box, and in the ball up to float rounding. For ``linf`` this is the exact Euclidean projection onto
        the intersection; for ``l2``/``l1`` it is a feasible point close to it.

        Under :attr:`constraints` the changes in a forbidden direction or of an immutable feature are set to zero
        first, then the L0 projection keeps the ``eps`` largest of the rest, the box clamps, and binary features
        are rounded to the nearer end of the box; rounding only zeroes changes or makes them whole, so the result
        keeps every constraint and changes at most ``eps`` features.
        """
        if self.constraints is not None:  # forbidden changes dropped, the eps largest kept, binary rounded
            delta = self.project_delta(self.constraints.restrict(x_adv - x), eps)
            return self.constraints.round(self.clip_box(x + delta), self.box)
        delta = self.project_delta(x_adv - x, eps)
        return self.clip_box(x + delta)

    def random_start(self, x: torch.Tensor, generator: torch.Generator | RNG | None = None) -> torch.Tensor:
        """A point drawn uniformly from the eps-ball around ``x``, then clamped into the box.

        Args:
            x: the clean points ``(N, ...)``.
            generator: a ``torch.Generator`` (one stream for the batch), an RNG of :mod:`advlab.rng` (an
                :class:`~advlab.rng.ExampleRNG` draws row ``i``'s start from example ``i``'s stream, whatever the
                other rows), or ``None`` for torch's global generator.
        """
        rng = _global_rng(x.device) if generator is None else as_rng(generator)
        shape = x.shape
        n, d = shape[0], x[0].numel()
        if self.norm == "linf":
            delta = rng.rand(shape, dtype=x.dtype) * 2 - 1
            delta = delta * self.eps
        elif self.norm == "l2":
            g = rng.randn((n, d), dtype=x.dtype)
            g = g / (g.norm(dim=1, keepdim=True) + _TINY)
            r = rng.rand((n, 1), dtype=x.dtype) ** (1.0 / d)
            delta = (g * r * self.eps).reshape(shape)
        elif self.norm == "l1":
            # Uniform in the L1 ball: Laplace direction normalised, radius ~ U^(1/d).
            e = -torch.log(rng.rand((n, d), dtype=x.dtype).clamp_min(_TINY))
            s = rng.randint(0, 2, (n, d)).to(x.dtype) * 2 - 1
            v = e * s
            v = v / (v.abs().sum(dim=1, keepdim=True) + _TINY)
            r = rng.rand((n, 1), dtype=x.dtype) ** (1.0 / d)
            delta = (v * r * self.eps).reshape(shape)
        else:  # l0: perturb eps random pixels uniformly in the box (near x where it is infinite: box_around)
            k = int(self.eps)
            scores = rng.rand((n, d))
            idx = scores.topk(min(k, d), dim=1).indices
            vals = rng.rand((n, idx.shape[1]), dtype=x.dtype)
            flat = flatten(x).to(scores.device).clone()
            lo, hi = self.box_around(flat.gather(1, idx))
            flat.scatter_(1, idx, lo + (hi - lo) * vals)
            start = to_device(flat.reshape(shape), x.device)
            return start if self.constraints is None else self.project(start, x)
        return self.clip_box(x + to_device(delta, x.device))  # draws of a CPU generator: no host sync

    def box_around(
        self, x: torch.Tensor, spread: float = UNBOUNDED_SCALE
    ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """``(low, high)`` of the box where it is finite, and ``x -+ spread`` on a side where it is infinite.

        Where random points "anywhere in the box" are drawn (an L0 random start, the noise that decision-based
        attacks start from), an infinite side is replaced by a finite range around the clean point.

        Args:
            x: the clean points.
            spread: how far past ``x`` the range reaches on an infinite side.
        """
        lo, hi = self.box
        low = lo if math.isfinite(lo) else x - spread
        high = hi if math.isfinite(hi) else x + spread
        return low, high

    def ascent_direction(
        self, grad: torch.Tensor, x_adv: torch.Tensor | None = None, *, l1_sparsity: float = 0.99
    ) -> torch.Tensor:
        """Steepest-ascent direction of unit norm for this norm, given the gradient.

        * ``linf``: ``sign(grad)``.
        * ``l2``: ``grad / ||grad||_2``.
        * ``l1``: the sparse L1 direction of Tramèr & Boneh 2019 (arXiv:1904.13000): the sign of the
          coordinates whose |grad| is at or above the ``l1_sparsity`` quantile, scaled to unit L1 norm.
          When ``x_adv`` is given, coordinates already at the box boundary whose gradient points outward are
          excluded (they cannot move).
        """
        if self.norm == "linf":
            return grad.sign()
        if self.norm == "l2":
            norms = flatten(grad).norm(p=2, dim=1)
            return grad / per_example(norms + _TINY, grad)
        if self.norm == "l1":
            g = flatten(grad)
            if x_adv is not None:
                xf = flatten(x_adv)
                blocked = ((xf <= self.box[0]) & (g < 0)) | ((xf >= self.box[1]) & (g > 0))
                g = g.masked_fill(blocked, 0.0)
            a = g.abs()
            k = max(1, round((1.0 - l1_sparsity) * g.shape[1]))
            thresh = a.topk(k, dim=1).values[:, -1:]
            mask = (a >= thresh) & (a > 0)
            direction = g.sign() * mask
            count = mask.sum(dim=1, keepdim=True).clamp_min(1)
            return (direction / count).reshape(grad.shape)
        raise ValueError(f"ascent_direction is not defined for norm {self.norm!r}")

    def distance(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-example distance ``|x_adv - x|`` in this threat model's norm, shape ``(N,)``."""
        return norm_of(x_adv - x, self.norm)

    def contains(self, x_adv: torch.Tensor, x: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
        """Per-example bool: ``x_adv`` is in the box exactly and in the ball up to float tolerance."""
        in_box = (flatten(x_adv) >= self.box[0]).all(1) & (flatten(x_adv) <= self.box[1]).all(1)
        tol = rtol * max(1.0, self.eps) + (1e-6 if self.norm != "l0" else 0.0)
        inside = in_box & (self.distance(x_adv, x) <= self.eps + tol)
        return inside if self.constraints is None else inside & self.constraints.satisfied(x_adv, x, self.box)

    def describe(self) -> str:
        """Human-readable form for reports, e.g. ``L∞ ≤ 0.3`` or ``L∞ ≤ 8/255`` (see :func:`format_eps`)."""
        sym = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}[self.norm]
        text = f"{sym} ≤ {format_eps(self.eps, self.box)}"
        return text if self.constraints is None else f"{text}, {self.constraints.describe()}"


PIXEL_LEVELS = 255
"""Levels of an 8-bit pixel above black: radii on [0, 1] images are often whole numbers of them (``8/255``)."""


def format_eps(eps: float, bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """A radius as people write it: ``4/255`` for a whole number of 8-bit pixel levels on [0, 1] inputs, else ``%g``.

    Fractions are shown below 0.1 only (``0.2`` is 51/255, but nobody means that), so typed decimals read as typed.

    Args:
        eps: the radius.
        bounds: the input box; fractions of 255 only for ``(0, 1)``.

    Examples:
        >>> format_eps(4 / 255), format_eps(0.3), format_eps(0.0157)
        ('4/255', '0.3', '0.0157')
    """
    levels = eps * PIXEL_LEVELS
    whole = round(levels)
    if tuple(bounds) == (0.0, 1.0) and 0 < eps < 0.1 and whole >= 1 and math.isclose(levels, whole, abs_tol=1e-6):
        return f"{whole}/{PIXEL_LEVELS}"
    return f"{eps:g}"


def check_threat_model(threat: Any) -> None:
    """Raise ``TypeError`` unless ``threat`` is an :class:`advlab.ThreatModel` (checked before any use of it)."""
    if not isinstance(threat, ThreatModel):
        raise TypeError(
            f"threat: expected advlab.ThreatModel, got {type(threat).__name__}. "
            "Build one with advlab.ThreatModel('linf', eps=0.3)."
        )
