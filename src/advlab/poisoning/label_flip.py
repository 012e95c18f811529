"""Label flipping: random flips, and adversarial flips chosen greedily to hurt a validation set.

:func:`label_flip` flips ``round(rate * N)`` labels drawn at random among the eligible rows (optionally only rows
of ``source`` classes, and always to ``target`` when one is given; otherwise to a uniformly drawn other class).

:func:`adversarial_label_flip` is a greedy, retrained version of the loss-based heuristics of Biggio et al. 2011
("farthest-first": flip the points the classifier is most sure of) and of the first step of Xiao et al. 2012's
ALFA (flip the labels that maximise the loss of the classifier trained on the current labels), with the
validation set deciding, as in Xiao et al.'s greedy baselines. In each of ``rounds`` rounds:

1. the model trained on the current labels scores every eligible, not yet flipped row ``i`` by its loss under the
   flipped label, ``-log p(c | x_i)``, with ``c`` the model's least likely class (or ``target``);
2. the ``pool`` times ``count / rounds`` highest-scoring rows are the candidates; ``trials`` batches of
   ``count / rounds`` rows are tried (the top-scored batch first, then random batches of the pool): each is
   flipped, the model retrained, and the batch that leaves the lowest validation accuracy is kept.

It costs ``1 + rounds * trials`` fits, and works with any learner: ``fit(x, y)`` returns a torch module (logits)
or a fitted scikit-learn estimator (``predict_proba`` or ``decision_function``). The default learner is
scikit-learn's logistic regression on the flattened inputs, a cheap linear surrogate in the spirit of Xiao et
al.'s linear SVMs; pass a neural-net trainer (e.g. :class:`~advlab.poisoning.training.Training`) to attack a
network directly.

References:
    Biggio, Nelson, Laskov. Support Vector Machines Under Adversarial Label Noise. ACML 2011.
    Xiao, Xiao, Eckert. Adversarial Label Flips Attack on Support Vector Machines. ECAI 2012.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import validation
from advlab.models import predict
from advlab.poisoning.base import (
    PoisonedData,
    check_rate,
    check_target,
    choose,
    generator_of,
    number_of_classes,
)

Fit = Callable[[torch.Tensor, torch.Tensor], Any]
"""A learner: ``fit(x, y)`` returns a trained torch module (logits) or a fitted scikit-learn estimator."""
LOGISTIC_MAX_ITER = 500
"""Iterations of the default logistic-regression learner (lbfgs)."""


def flip_count(rate: float, n: int) -> int:
    """``round(rate * n)`` labels, at least one."""
    check_rate(rate)
    return max(1, round(rate * n))


def check_xy(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as a float tensor with one row per example, ``y`` as int64 labels; unlabelled data refused."""
    x = validation.as_tensor("x", x, float32="float64")
    if y is None:
        raise ValueError("y: label flipping changes labels and needs labelled data; pass the training labels")
    y = validation.as_labels("y", y)
    validation.check_labels(y, x.shape[0], None)
    return x, y.to(torch.int64)


def flippable(y: torch.Tensor, source: int | list[int] | None, target: int | None, k: int) -> torch.Tensor:
    """Rows whose label may be flipped: of a ``source`` class (any when None) and not already ``target``."""
    keep = torch.ones_like(y, dtype=torch.bool)
    if source is not None:
        classes = [source] if isinstance(source, int) else list(source)
        for c in classes:
            check_target(c, k, "source")
        keep &= torch.isin(y, torch.tensor(classes, dtype=y.dtype))
    if target is not None:
        keep &= y != check_target(target, k)
    return keep.nonzero().flatten()


def label_flip(
    x: torch.Tensor,
    y: torch.Tensor,
    rate: float = 0.1,
    source: int | list[int] | None = None,
    target: int | None = None,
    seed: int | None = 0,
    num_classes: int | None = None,
) -> PoisonedData:
    """Flip ``round(rate * N)`` labels drawn at random among the eligible rows.

    Args:
        x: clean training inputs (kept as they are in the poisoned copy).
        y: clean training labels ``(N,)``.
        rate: share of the training set whose label is flipped, in ``(0, 1]``.
        source: flip only rows of this class (or these classes); None: any class.
        target: flip every chosen row to this class (rows already of it are not eligible); None: each chosen row
            to a uniformly drawn other class.
        seed: seed of the draws.
        num_classes: the number of classes (default: one more than the largest label).

    Returns:
        The poisoned copy; every row in ``indices`` has a label different from its original one.

    Raises:
        ValueError: ``rate`` outside ``(0, 1]``, ``source``/``target`` not a class, more flips than eligible rows.

    Examples:
        >>> x, y = torch.rand(100, 4), torch.arange(100) % 4
        >>> p = label_flip(x, y, rate=0.1, seed=0)
        >>> p.n_poisons, bool((p.y[p.indices] != p.original_labels).all())
        (10, True)
    """
    x, y = check_xy(x, y)
    k = number_of_classes(y, num_classes)
    generator = generator_of(seed)
    rows = choose(flip_count(rate, x.shape[0]), flippable(y, source, target, k), generator)
    if target is not None:
        new: torch.Tensor = torch.full_like(rows, target)
    else:
        new = (y[rows] + torch.randint(1, k, rows.shape, generator=generator)) % k
    settings = {"rate": rate, "source": source, "num_classes": k, "rule": "random"}
    return flipped(x, y, rows, new, "label-flip", settings, seed, target)


def flipped(
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    new: torch.Tensor,
    attack: str,
    settings: dict[str, Any],
    seed: int | None,
    target: int | None,
    extra: dict[str, torch.Tensor] | None = None,
) -> PoisonedData:
    """The poisoned copy of ``(x, y)`` whose ``rows`` carry the labels ``new`` (inputs untouched)."""
    order = rows.argsort()
    rows, new = rows[order], new[order]
    y_poisoned = y.clone()
    y_poisoned[rows] = new
    return PoisonedData(
        x=x.clone(),
        y=y_poisoned,
        indices=rows,
        original_labels=y[rows].clone(),
        attack=attack,
        settings=settings,
        seed=seed,
        target=target,
        extra=extra or {},
    )


def fit_logistic(x: torch.Tensor, y: torch.Tensor) -> Any:
    """The default learner: scikit-learn's multinomial logistic regression on the flattened inputs."""
    from sklearn.linear_model import LogisticRegression

    flat = x.reshape(x.shape[0], -1).double().numpy()
    return LogisticRegression(max_iter=LOGISTIC_MAX_ITER).fit(flat, y.numpy())


def log_probabilities(model: Any, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, K)`` log-probabilities of a torch module (softmax of its logits) or a fitted scikit-learn estimator.

    A scikit-learn estimator trained on fewer classes than ``num_classes`` gives the missing ones probability 0
    (log-probability -inf is clipped to log(1e-12)).
    """
    if isinstance(model, nn.Module):
        return predict(model, x, logits=True).float().cpu().log_softmax(1)
    flat = x.reshape(x.shape[0], -1).double().numpy()
    if hasattr(model, "predict_proba"):
        scores = np.log(np.clip(model.predict_proba(flat), 1e-12, None))
    elif hasattr(model, "decision_function"):
        d = np.asarray(model.decision_function(flat), dtype=np.float64)
        scores = np.stack([np.zeros_like(d), d], 1) if d.ndim == 1 else d
        scores = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
    else:
        raise TypeError(
            f"fit: returned a {type(model).__name__}, which is neither a torch module nor a scikit-learn estimator "
            "with predict_proba or decision_function"
        )
    out = torch.full((x.shape[0], num_classes), float(np.log(1e-12)), dtype=torch.float64)
    out[:, torch.as_tensor(np.asarray(model.classes_), dtype=torch.int64)] = torch.from_numpy(scores)
    return out.float()


def validation_accuracy(model: Any, x_val: torch.Tensor, y_val: torch.Tensor, num_classes: int) -> float:
    """Accuracy of ``model`` on the validation set."""
    return float((log_probabilities(model, x_val, num_classes).argmax(1) == y_val).float().mean())


class GreedyFlips:
    """The state of one :func:`adversarial_label_flip` run; each round is :meth:`step` (score, try, keep)."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        val: tuple[torch.Tensor, torch.Tensor],
        fit: Fit,
        eligible: torch.Tensor,
        num_classes: int,
        target: int | None,
        generator: torch.Generator,
    ) -> None:
        self.x, self.y, self.val, self.fit = x, y, val, fit
        self.k, self.target, self.generator = num_classes, target, generator
        self.available = torch.zeros_like(y, dtype=torch.bool)
        self.available[eligible] = True
        self.labels = y.clone()
        self.model = fit(x, self.labels)
        self.trace = [validation_accuracy(self.model, *val, num_classes)]

    def flip_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's loss under its most damaging flipped label, and that label (``target`` when given)."""
        logp = log_probabilities(self.model, self.x, self.k)
        if self.target is not None:
            new = torch.full_like(self.y, self.target)
        else:
            own = logp.clone()
            own[torch.arange(self.y.numel()), self.y] = float("inf")  # never "flip" to the true label
            new = own.argmin(1)
        loss = -logp.gather(1, new[:, None]).squeeze(1)
        return loss.masked_fill(~self.available, -float("inf")), new

    def batches(self, scores: torch.Tensor, size: int, pool: int, trials: int) -> list[torch.Tensor]:
        """The top-scored batch, then ``trials - 1`` random batches of the ``pool * size`` best candidates."""
        ranked = scores.argsort(descending=True)[: min(int(self.available.sum()), pool * size)]
        out = [ranked[:size]]
        for _ in range(trials - 1):
            if ranked.numel() <= size:
                break
            out.append(ranked[torch.randperm(ranked.numel(), generator=self.generator)[:size]])
        return out

    def step(self, size: int, pool: int, trials: int) -> None:
        """One round: score, try each candidate batch (flip, retrain, validate), keep the most damaging one."""
        scores, new = self.flip_scores()
        best: tuple[float, torch.Tensor, Any] | None = None
        for rows in self.batches(scores, size, pool, trials):
            labels = self.labels.clone()
            labels[rows] = new[rows]
            model = self.fit(self.x, labels)
            acc = validation_accuracy(model, *self.val, self.k)
            if best is None or acc < best[0]:
                best = (acc, rows, model)
        assert best is not None  # batches() always yields the top batch
        acc, rows, self.model = best
        self.labels[rows] = new[rows]
        self.available[rows] = False
        self.trace.append(acc)


def adversarial_label_flip(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    rate: float = 0.1,
    fit: Fit | None = None,
    rounds: int = 5,
    trials: int = 4,
    pool: int = 4,
    source: int | list[int] | None = None,
    target: int | None = None,
    seed: int | None = 0,
    num_classes: int | None = None,
) -> PoisonedData:
    """Flip the ``round(rate * N)`` labels that most hurt a validation set, greedily (see the module docstring).

    Args:
        x: clean training inputs (kept as they are).
        y: clean training labels ``(N,)``.
        x_val: validation inputs the flips are chosen to hurt (not the test set you report on).
        y_val: their labels.
        rate: share of the training set whose label is flipped, in ``(0, 1]``.
        fit: the learner, ``fit(x, y) -> model`` (torch module or fitted scikit-learn estimator); default
            :func:`fit_logistic`.
        rounds: greedy rounds; each flips ``count / rounds`` labels (the last one the remainder).
        trials: candidate batches tried per round (each costs one fit).
        pool: the candidates of a round are the ``pool * count / rounds`` highest-loss rows.
        source: flip only rows of this class (or these classes); None: any class.
        target: flip to this class; None: to the class the current model finds least likely.
        seed: seed of the random candidate batches.
        num_classes: the number of classes (default: one more than the largest label).

    Returns:
        The poisoned copy; ``extra["validation_accuracy"]`` holds the validation accuracy before any flip and
        after each round.

    Raises:
        ValueError: bad ``rate``, ``rounds``, ``trials``, ``pool``, ``source``/``target``; more flips than
            eligible rows; unlabelled data.

    Examples:
        >>> from sklearn.datasets import load_digits
        >>> d = load_digits()
        >>> x, y = torch.tensor(d.data[:600] / 16).float(), torch.tensor(d.target[:600])
        >>> p = adversarial_label_flip(x[:400], y[:400], x[400:], y[400:], rate=0.05, rounds=2, trials=2)
        >>> p.n_poisons
        20
    """
    x, y = check_xy(x, y)
    x_val, y_val = check_xy(x_val, y_val)
    k = number_of_classes(torch.cat([y, y_val]), num_classes)
    count = flip_count(rate, x.shape[0])
    rounds = validation.check_int("rounds", rounds, minimum=1, maximum=count)
    trials = validation.check_int("trials", trials, minimum=1)
    pool = validation.check_int("pool", pool, minimum=1)
    eligible = flippable(y, source, target, k)
    if count > eligible.numel():
        raise ValueError(f"rate: asks for {count} flips but only {eligible.numel()} rows are eligible; lower rate")
    greedy = GreedyFlips(x, y, (x_val, y_val), fit or fit_logistic, eligible, k, target, generator_of(seed))
    sizes = [count // rounds + (1 if r < count % rounds else 0) for r in range(rounds)]
    for size in sizes:
        greedy.step(size, pool, trials)
    rows = (greedy.labels != y).nonzero().flatten()
    settings: dict[str, Any] = {"rate": rate, "rounds": rounds, "trials": trials, "pool": pool, "source": source}
    settings["num_classes"] = k
    settings["rule"] = "greedy loss-scored flips, validation-chosen (Xiao et al. 2012; Biggio et al. 2011)"
    extra = {"validation_accuracy": torch.tensor(greedy.trace)}
    return flipped(x, y, rows, greedy.labels[rows], "adversarial-label-flip", settings, seed, target, extra)
