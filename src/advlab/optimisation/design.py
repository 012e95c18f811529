"""A known "design" function with a documented optimum, and the part of the design space the data covers.

The score of a design ``x`` in ``[0, 1]^d`` is

    f(x) = (1/d) * sum_i [ cos(2 pi k (x_i - o_i)) - a (x_i - o_i)^2 ]

with ``k = 3`` waves per unit and ``a = 10``: smooth, multi-modal (each coordinate has local maxima every ``1/k``
around ``o_i``), separable, and maximal exactly at ``x = o`` with ``f(o) = 1``. The data domain is a box
``[low, high]^d`` inside the design space that does not contain ``o`` in every coordinate, so the best design
the data can show is worse than the true optimum; because ``f`` is separable, the best design inside the domain
is found coordinate by coordinate on a fine grid (:meth:`DesignProblem.domain_optimum`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advlab import validation

WAVES = 3.0
"""k: cosine periods per unit of a coordinate (local maxima 1/k apart)."""
CURVATURE = 10.0
"""a: weight of the quadratic bowl that makes ``o`` the global maximum."""
GRID = 100_001
"""Points per coordinate of the grid that finds the best design inside the domain."""


@dataclass(frozen=True)
class DesignProblem:
    """The design function, its optimum and the data domain.

    Args:
        dim: number of design coordinates.
        low: lower corner of the data domain (every coordinate).
        high: upper corner of the data domain.
        seed: draws the optimum ``o``, uniform in ``[0.3, 0.8]`` per coordinate.

    Examples:
        >>> problem = DesignProblem(dim=12)
        >>> float(problem.score(problem.optimum[None]))
        1.0
    """

    dim: int = 12
    low: float = 0.1
    high: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        validation.check_int("dim", self.dim, minimum=1)
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"low, high: expected 0 <= low < high <= 1, got low={self.low}, high={self.high}")

    @property
    def optimum(self) -> torch.Tensor:
        """The true optimum ``o`` ``(dim,)``; its score is exactly 1."""
        g = torch.Generator().manual_seed(self.seed)
        return 0.3 + 0.5 * torch.rand(self.dim, generator=g, dtype=torch.float64)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The true score ``f`` of designs ``(N, dim)`` as ``(N,)`` (float64 inside)."""
        delta = x.to(torch.float64) - self.optimum
        return (torch.cos(2 * math.pi * WAVES * delta) - CURVATURE * delta**2).mean(dim=1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` designs uniform in the data domain ``(n, dim)`` (float32)."""
        return self.low + (self.high - self.low) * torch.rand(n, self.dim, generator=generator)

    def out_of_domain(self, x: torch.Tensor) -> torch.Tensor:
        """Euclidean distance ``(N,)`` from each design to the data domain (0 inside it)."""
        return (x.clamp(self.low, self.high) - x).norm(dim=1)

    def domain_optimum(self) -> tuple[torch.Tensor, float]:
        """The best design inside the data domain and its true score (separable: one grid search per coordinate)."""
        grid = torch.linspace(self.low, self.high, GRID, dtype=torch.float64)
        delta = grid[:, None] - self.optimum[None, :]
        per_coordinate = torch.cos(2 * math.pi * WAVES * delta) - CURVATURE * delta**2
        best = grid[per_coordinate.argmax(dim=0)]
        return best, float(self.score(best[None])[0])
