"""Spam filters on binary bag-of-words features: naive Bayes (multinomial, Bernoulli), logistic regression, a small net.

Every filter answers :meth:`SpamModel.score`: the log-odds of spam, ``> 0`` means spam. The three linear filters are
one class, :class:`LinearSpamModel` (``score = bias + weights @ x``), built from the fitted scikit-learn estimator:

- multinomial naive Bayes on 0/1 counts: ``w_j = log theta_spam,j - log theta_ham,j``, ``b = log P(spam)/P(ham)``;
- Bernoulli naive Bayes: ``w_j = log [p_j (1 - q_j)] / [q_j (1 - p_j)]`` and
  ``b = log P(spam)/P(ham) + sum_j log (1 - p_j)/(1 - q_j)`` with ``p_j = P(word j | spam)``, ``q_j`` for ham;
- logistic regression: its coefficients and intercept.

The Bernoulli naive Bayes model also keeps its spam-class log-likelihood table (:attr:`LinearSpamModel.likelihood`), which
the adversary-aware classifier of Dalvi et al. needs. :class:`NeuralSpamModel` is a one-hidden-layer torch network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import BernoulliNB, MultinomialNB

MODEL_NAMES = ("multinomial-nb", "bernoulli-nb", "logistic", "mlp")
"""The filters :func:`train_model` builds."""

Features: TypeAlias = Any
"""0/1 word features, one row per message: a scipy sparse matrix or a numpy array (N, V)."""


@dataclass(frozen=True)
class Likelihood:
    """Per-word log-likelihoods under the spam class: ``present[j] = log P(x_j = 1 | spam)``, ``absent`` for 0."""

    present: np.ndarray
    absent: np.ndarray


class SpamModel:
    """A spam filter over 0/1 word features: ``score(X)`` is the log-odds of spam; ``score > 0`` is spam."""

    name: str = "model"

    def score(self, x: Features) -> np.ndarray:
        """Log-odds of spam, one float64 per row of ``x`` (N, V), sparse or dense."""
        raise NotImplementedError

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """d score / d x at one dense message ``x`` (V,); the weights for a linear filter."""
        raise NotImplementedError

    def is_spam(self, x: Features) -> np.ndarray:
        """Boolean per row: the filter calls it spam."""
        return self.score(x) > 0

    def accuracy(self, x: Features, y: np.ndarray) -> float:
        """Share of rows whose spam/ham call matches ``y`` (1 = spam)."""
        return float(np.mean(self.is_spam(x) == (np.asarray(y) == 1)))


@dataclass
class LinearSpamModel(SpamModel):
    """``score(x) = bias + weights @ x``; naive Bayes models also carry their spam-class likelihood table.

    Args:
        weights: one float64 weight per vocabulary word.
        bias: the intercept.
        name: the filter's name.
        likelihood: per-word spam-class log-likelihoods (naive Bayes only).
    """

    weights: np.ndarray
    bias: float
    name: str = "linear"
    likelihood: Likelihood | None = field(default=None, repr=False)

    def score(self, x: Features) -> np.ndarray:
        """Log-odds of spam per row."""
        return np.asarray(x @ self.weights, dtype=np.float64).reshape(-1) + self.bias

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """The weights (the score is linear)."""
        return self.weights


class NeuralSpamModel(SpamModel):
    """A torch network from V word features to one spam logit (the score).

    Args:
        net: the module, mapping (N, V) float32 to (N, 1) logits.
        name: the filter's name.
        batch_size: rows per forward pass when scoring.
    """

    def __init__(self, net: torch.nn.Module, name: str = "mlp", batch_size: int = 512) -> None:
        self.net = net.eval()
        self.name = name
        self.batch_size = batch_size

    def score(self, x: Features) -> np.ndarray:
        """Logit of spam per row, in batches of dense rows."""
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                out.append(self.net(_dense(x[i : i + self.batch_size])).reshape(-1).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """Autograd of the logit at one message."""
        t = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(1, -1).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.net(t).sum(), t)
        return grad.reshape(-1).double().numpy()


def _dense(x: Features) -> torch.Tensor:
    rows = x.toarray() if sp.issparse(x) else np.asarray(x)
    return torch.as_tensor(rows, dtype=torch.float32)


def from_multinomial_nb(nb: MultinomialNB, name: str = "multinomial-nb") -> LinearSpamModel:
    """The linear form of a fitted two-class multinomial naive Bayes (class 1 = spam) on 0/1 counts.

    Args:
        nb: the fitted estimator.
        name: the filter's name.

    Returns:
        The filter (without a likelihood table: the multinomial model is no distribution over 0/1 vectors).
    """
    flp = np.asarray(nb.feature_log_prob_, dtype=np.float64)
    prior = np.asarray(nb.class_log_prior_, dtype=np.float64)
    return LinearSpamModel(flp[1] - flp[0], float(prior[1] - prior[0]), name)


def from_bernoulli_nb(nb: BernoulliNB, name: str = "bernoulli-nb") -> LinearSpamModel:
    """The linear form of a fitted two-class Bernoulli naive Bayes (class 1 = spam).

    Args:
        nb: the fitted estimator.
        name: the filter's name.

    Returns:
        The filter with its spam-class likelihood table (``log p_j`` and ``log (1 - p_j)``).
    """
    log_p = np.asarray(nb.feature_log_prob_, dtype=np.float64)
    log_not = np.log1p(-np.exp(log_p))
    prior = np.asarray(nb.class_log_prior_, dtype=np.float64)
    weights = (log_p[1] - log_not[1]) - (log_p[0] - log_not[0])
    bias = float(prior[1] - prior[0] + np.sum(log_not[1] - log_not[0]))
    return LinearSpamModel(weights, bias, name, Likelihood(log_p[1].copy(), log_not[1].copy()))


def from_logistic(lr: LogisticRegression, name: str = "logistic") -> LinearSpamModel:
    """The linear form of a fitted two-class logistic regression (class 1 = spam).

    Args:
        lr: the fitted estimator.
        name: the filter's name.

    Returns:
        The filter.
    """
    return LinearSpamModel(np.asarray(lr.coef_, dtype=np.float64).reshape(-1), float(lr.intercept_[0]), name)


def train_mlp(x: Features, y: np.ndarray, hidden: int = 32, epochs: int = 10, seed: int = 0) -> NeuralSpamModel:
    """Train a V-hidden-1 ReLU network with Adam (lr 1e-3, batch 64, weight decay 1e-4) on the logistic loss.

    Args:
        x: 0/1 features (N, V).
        y: labels, 1 = spam.
        hidden: hidden units.
        epochs: passes over the data.
        seed: seeds the initial weights and the batch order.

    Returns:
        The trained filter (in eval mode).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    xt, yt = _dense(x), torch.as_tensor(np.asarray(y), dtype=torch.float32)
    for _ in range(epochs):
        for rows in torch.randperm(len(yt), generator=gen).split(64):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[rows]).reshape(-1), yt[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return NeuralSpamModel(net)


def train_model(name: str, x: Features, y: np.ndarray, seed: int = 0) -> SpamModel:
    """Fit one of :data:`MODEL_NAMES` on 0/1 features ``x`` and labels ``y`` (1 = spam).

    Args:
        name: ``"multinomial-nb"``, ``"bernoulli-nb"`` (Laplace smoothing, alpha 1), ``"logistic"`` (L2, C = 10,
            liblinear) or ``"mlp"`` (see :func:`train_mlp`).
        x: features (N, V), sparse or dense.
        y: labels.
        seed: seed of the network's training (the other fits are deterministic).

    Returns:
        The filter.

    Raises:
        ValueError: unknown name (with the list), or labels that are not both 0 and 1.

    Examples:
        >>> m = train_model("bernoulli-nb", np.array([[1.0, 0], [0, 1]]), np.array([1, 0]))
        >>> m.is_spam(np.array([[1.0, 0]])).tolist()
        [True]
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model: unknown spam filter {name!r}; use one of {', '.join(MODEL_NAMES)}")
    y = np.asarray(y)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("y: the training labels must hold both ham (0) and spam (1) messages")
    if name == "multinomial-nb":
        return from_multinomial_nb(MultinomialNB(alpha=1.0).fit(x, y))
    if name == "bernoulli-nb":
        return from_bernoulli_nb(BernoulliNB(alpha=1.0, binarize=None).fit(x, y))
    if name == "logistic":
        return from_logistic(LogisticRegression(C=10.0, solver="liblinear", max_iter=1000).fit(x, y))
    return train_mlp(x, y, seed=seed)
