"""Shallow models: multinomial and binary logistic regression, and the RBF network of Goodfellow et al. (2014)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advlab import validation
from advlab.zoo.base import ArchSpec, check_shape, flat_size, register


class SoftmaxRegression(nn.Sequential):
    """Multinomial logistic regression: ``logits = W flatten(x) + b``.

    The linear baseline of the adversarial-examples literature: Goodfellow, Shlens & Szegedy (2014) show that
    FGSM with eps = 0.25 drives a softmax regression on MNIST to 99.9% error (their §5), and on a linear model
    the optimal L∞ attack is exactly FGSM, which makes it the analytic oracle of the attack tests.

    Args:
        input_shape: per-example shape; any rank, flattened.
        num_classes: number of classes.

    References:
        Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
        arXiv:1412.6572, §5.

    Examples:
        >>> net = SoftmaxRegression((1, 8, 8), 10)
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        input_shape = check_shape(input_shape)
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        super().__init__(nn.Flatten(), nn.Linear(flat_size(input_shape), num_classes))


class LogisticRegression(nn.Module):
    """Binary logistic regression as a 2-class classifier: one linear score ``z = w·x + b``, logits ``[0, z]``.

    ``softmax([0, z])[1] = sigmoid(z)``, so cross-entropy on these logits is the usual logistic loss and every
    attack written for multi-class logits applies unchanged. The decision boundary is the hyperplane ``z = 0``,
    so the minimal L2 adversarial perturbation is ``|z| / ||w||_2`` and the minimal L∞ one ``|z| / ||w||_1``
    (Goodfellow et al. 2014, §5) — the closed forms the attack tests compare against.

    Args:
        input_shape: per-example shape; any rank, flattened.
        num_classes: must be 2.

    References:
        Goodfellow, Shlens & Szegedy, arXiv:1412.6572, §5 ("adversarial training of linear models").

    Examples:
        >>> net = LogisticRegression((64,), 2)
        >>> net(torch.zeros(3, 64))[:, 0]
        tensor([0., 0., 0.], grad_fn=<SelectBackward0>)
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 2) -> None:
        super().__init__()
        input_shape = check_shape(input_shape)
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        if num_classes != 2:
            raise ValueError(
                f"num_classes: logistic-regression is a binary classifier and needs num_classes=2, got "
                f"{num_classes}. Use softmax-regression for {num_classes} classes."
            )
        self.linear = nn.Linear(flat_size(input_shape), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.flatten(1))
        return torch.cat([torch.zeros_like(z), z], dim=1)


class RBFNetwork(nn.Module):
    """Shallow RBF network: ``logits_c = -sum_i beta_ci (x_i - w_ci)^2 + b_c`` with ``beta_ci > 0``.

    Each class has a learned centre ``w_c`` and a learned per-feature precision ``beta_c`` (kept positive by a
    softplus of an unconstrained parameter), so a class is confident only near its centre. Goodfellow et al.
    report that this model resists FGSM (55.4% error at eps = 0.25 on MNIST, with only 1.2% confidence on the
    misclassified examples) at the price of accuracy: its capacity is far below a deep network's.

    The centres start at 0 (the data mean once inputs are normalised) and the precisions at ``init_precision``
    (default ``1 / D`` so initial logits are O(1)); the initialisation is deterministic.

    Args:
        input_shape: per-example shape; any rank, flattened to ``D`` features.
        num_classes: number of classes.
        init_precision: initial value of every ``beta_ci`` (> 0); ``None`` means ``1 / D``.

    References:
        Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
        arXiv:1412.6572, §7 ("Different kinds of model capacity").

    Examples:
        >>> net = RBFNetwork((1, 28, 28), 10)
        >>> net.precision.shape
        torch.Size([10, 784])
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, init_precision: float | None = None) -> None:
        super().__init__()
        input_shape = check_shape(input_shape)
        num_classes = validation.check_int("num_classes", num_classes, minimum=2)
        d = flat_size(input_shape)
        beta0 = (
            1.0 / d
            if init_precision is None
            else validation.check_float("init_precision", init_precision, minimum=0.0, strict_min=True)
        )
        raw0 = math.log(math.expm1(beta0))  # inverse softplus
        self.centers = nn.Parameter(torch.zeros(num_classes, d))
        self.raw_precision = nn.Parameter(torch.full((num_classes, d), raw0))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    @property
    def precision(self) -> torch.Tensor:
        """The positive per-class, per-feature precisions ``beta`` of shape ``(C, D)``."""
        return F.softplus(self.raw_precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        beta = self.precision
        # sum_i beta_ci (x_i - w_ci)^2 expanded into matrix products: O(N*D + C*D) memory instead of O(N*C*D).
        quad = (x * x) @ beta.t() - 2.0 * x @ (beta * self.centers).t() + (beta * self.centers**2).sum(1)
        return self.bias - quad


_PAPER_FGSM = "Goodfellow, Shlens & Szegedy 2014, arXiv:1412.6572"

register(
    ArchSpec(
        name="softmax-regression",
        constructor=SoftmaxRegression,
        dataset="mnist",
        paper=f"{_PAPER_FGSM}, §5 (linear models)",
        summary="multinomial logistic regression (Flatten + Linear)",
    )
)
register(
    ArchSpec(
        name="logistic-regression",
        constructor=LogisticRegression,
        dataset="mnist",
        paper=f"{_PAPER_FGSM}, §5 (binary logistic regression, MNIST 3 vs 7)",
        summary="binary logistic regression, 2-class logits [0, z]",
    )
)
register(
    ArchSpec(
        name="rbf",
        constructor=RBFNetwork,
        default_kwargs={"init_precision": None},
        dataset="mnist",
        paper=f"{_PAPER_FGSM}, §7 (shallow RBF network)",
        summary="shallow RBF network with learned centres and positive precisions",
    )
)
