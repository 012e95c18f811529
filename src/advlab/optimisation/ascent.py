"""Optimising designs for a surrogate's predicted score by gradient ascent, with or without staying in the data's domain.

The constraint is a threat model: designs move in the L∞ ball of radius 1 around their start (the whole unit cube)
intersected with a box, the design space ``[0, 1]`` or the data domain ``[low, high]``, and
:meth:`advlab.threat.ThreatModel.project` puts each step back inside, as it does for an attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from advlab.optimisation.design import DesignProblem
from advlab.threat import ThreatModel


@dataclass(frozen=True)
class Trajectory:
    """Mean over the starting designs, per recorded step, of the predicted score, the true score and the distance
    out of the data domain; and the final designs.

    Args:
        steps: the step indices recorded (0 is the start).
        predicted: mean predicted score per recorded step.
        true: mean true score per recorded step.
        out_of_domain: mean Euclidean distance to the data domain per recorded step.
        designs: the final designs ``(N, dim)``.
    """

    steps: list[int]
    predicted: list[float]
    true: list[float]
    out_of_domain: list[float]
    designs: torch.Tensor


def ascend(
    surrogate: nn.Module,
    starts: torch.Tensor,
    problem: DesignProblem,
    *,
    in_domain: bool,
    steps: int = 300,
    lr: float = 0.01,
    record_every: int = 10,
) -> Trajectory:
    """Adam ascent of the surrogate's predicted score from ``starts``, projected onto the domain or the design space.

    Args:
        surrogate: the model predicting scores ``(N,)`` of designs ``(N, dim)``.
        starts: the starting designs (inside the data domain).
        problem: the design problem (its true score is only measured, never followed).
        in_domain: project every step onto the data domain ``[low, high]`` (else onto ``[0, 1]``).
        steps: ascent steps.
        lr: Adam's learning rate.
        record_every: steps between recorded points of the trajectory.

    Examples:
        >>> trajectory = ascend(surrogate, best_designs, problem, in_domain=False)
        >>> trajectory.predicted[-1], trajectory.true[-1]
    """
    box = (problem.low, problem.high) if in_domain else (0.0, 1.0)
    threat = ThreatModel("linf", 1.0, box)
    x = starts.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=lr)
    record: dict[str, list] = {"steps": [], "predicted": [], "true": [], "out_of_domain": []}
    for step in range(steps + 1):
        predicted = surrogate(x)
        if step % record_every == 0 or step == steps:
            record["steps"].append(step)
            record["predicted"].append(float(predicted.detach().mean()))
            record["true"].append(float(problem.score(x.detach()).mean()))
            record["out_of_domain"].append(float(problem.out_of_domain(x.detach()).mean()))
        if step == steps:
            break
        optimiser.zero_grad()
        (-predicted.sum()).backward()
        optimiser.step()
        with torch.no_grad():
            x.copy_(threat.project(x, starts))
    return Trajectory(**record, designs=x.detach())
