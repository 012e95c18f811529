"""Surrogate networks that predict a design's score, trained plainly or adversarially on samples from the domain.

Adversarial training of the regression surrogate asks the same question the optimiser will: in an L∞ ball of
radius ``eps`` around each training design, which design does the surrogate score highest? advlab's PGD finds it
(:class:`ScoreAsLogits` turns the score into the logit of a target class, and the ``"logit"`` loss ascends it),
and the surrogate is trained to predict the true score of the clean design there too: ``MSE(s(x), y) +
MSE(s(x_adv), y)``. advlab's classification trainers (:mod:`advlab.defenses`) have no regression loss, so the
outer loop is here; the inner maximisation is the library's attack.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks import make_attack
from advlab.goals import Targeted
from advlab.threat import ThreatModel


class Surrogate(nn.Module):
    """An MLP ``[0, 1]^dim -> R`` predicting a design's score.

    Args:
        dim: number of design coordinates.
        hidden: width of the two hidden ReLU layers.

    Examples:
        >>> Surrogate(12)(torch.rand(5, 12)).shape
        torch.Size([5])
    """

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted scores ``(N,)`` of designs ``(N, dim)``."""
        return self.net(x).squeeze(-1)


class ScoreAsLogits(nn.Module):
    """A surrogate seen as a two-class model with logits ``[0, s(x)]``: targeting class 1 with the ``"logit"`` loss
    ascends the predicted score (how advlab's attacks maximise a regression output).

    Args:
        surrogate: the surrogate.
    """

    def __init__(self, surrogate: nn.Module) -> None:
        super().__init__()
        self.surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 2)``: zeros and the predicted scores."""
        s = self.surrogate(x)
        return torch.stack([torch.zeros_like(s), s], dim=1)


def highest_scored(surrogate: nn.Module, x: torch.Tensor, eps: float, steps: int, seed: int) -> torch.Tensor:
    """The design in the L∞ ball of radius ``eps`` around each of ``x`` (inside ``[0, 1]``) that PGD finds the
    surrogate scores highest (advlab's PGD, targeted at class 1 of :class:`ScoreAsLogits`, ``"logit"`` loss).

    Args:
        surrogate: the surrogate (left in eval mode).
        x: designs ``(N, dim)``.
        eps: the L∞ radius.
        steps: PGD iterations.
        seed: PGD's random start.
    """
    pgd = make_attack("pgd", steps=steps, loss="logit")
    low, high = torch.zeros(len(x), dtype=torch.long), torch.ones(len(x), dtype=torch.long)
    threat = ThreatModel("linf", eps, (0.0, 1.0))
    return torch.as_tensor(
        pgd(ScoreAsLogits(surrogate).eval(), x, low, threat, goal=Targeted(high), generator=seed).x_adv
    )


def fit_surrogate(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 0.0,
    epochs: int = 200,
    lr: float = 3e-3,
    batch_size: int = 128,
    steps: int = 5,
    seed: int = 0,
) -> Surrogate:
    """Train a :class:`Surrogate` on designs ``x`` and their scores ``y`` (plainly when ``eps == 0``).

    Args:
        x: designs ``(N, dim)`` in ``[0, 1]``.
        y: their true scores ``(N,)``.
        eps: L∞ radius of adversarial training (0: standard training).
        epochs: passes over the data.
        lr: Adam's learning rate.
        batch_size: designs per step.
        steps: PGD iterations of the inner maximisation.
        seed: seeds the weights, the batch order and PGD.

    Returns:
        The trained surrogate, in eval mode.

    Examples:
        >>> robust = fit_surrogate(x, y, eps=0.05)
    """
    gen = torch.Generator().manual_seed(seed)
    model = Surrogate(x.shape[1])
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p.shape[1]) ** 0.5 if p.dim() > 1 else p * 0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    y = y.to(torch.float32)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            xb, yb = x[order[i : i + batch_size]], y[order[i : i + batch_size]]
            loss = nn.functional.mse_loss(model(xb), yb)
            if eps > 0:
                x_adv = highest_scored(model, xb, eps, steps, seed * 1_000_003 + epoch * len(x) + i)
                model.train()
                loss = loss + nn.functional.mse_loss(model(x_adv), yb)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()
