"""Defenses against word attacks: Dalvi et al.'s adversary-aware naive Bayes, and adversarial training.

**Adversary-aware classifier** (Dalvi, Domingos, Mausam, Sanghai & Verma, "Adversarial Classification", KDD 2004,
the one-step game). The adversary changes a spam message ``x'`` into ``A(x')``, the cheapest message the naive
Bayes filter calls ham, when that costs at most its budget (each changed word costs 1; the budget plays the part
of Dalvi's utility of a spam getting through); otherwise it leaves it. The classifier that knows this replaces
``P(x | spam)`` by ``P_A(x | spam) = sum over x' with A(x') = x of P(x' | spam)`` and decides as before.

For a linear score with unit costs, ``A(x')`` is the greedy attack (largest decreases first, stop at ham). So
``A(x') = x`` for a message ``x`` on the ham side exactly when ``x'`` is ``x`` with a set ``D`` of changes undone
where every ``j`` in ``D`` (a good word present in ``x`` or a spam word absent from it, of the allowed kinds)

- has ``|w_j|`` at least every change still open at ``x`` (else the greedy adversary had taken that one first),
- has ``|w_j| > -score(x)`` (else the adversary would have stopped before making it), and ``|D| <= budget``.

Under Bernoulli naive Bayes ``P(x' | spam) = P(x | spam) * prod_{j in D} r_j`` with ``r_j`` the likelihood ratio
of the undone feature, so the sum over all such ``D`` is ``P(x | spam) * (1 + e_1 + ... + e_budget)``, the
elementary symmetric polynomials of the ``r_j`` (the ``1`` is ``x`` itself, a spam the adversary left alone).
The aware score of a ham-side message is ``score(x) + log(1 + e_1 + ... + e_budget)``, computed exactly in log
space. One deliberate departure: a message on the spam side stays spam (Dalvi's rule would call an affordable,
unattacked spam ham, since a rational adversary never sends one; real traffic holds spam nobody attacked).

**Adversarial training**: refit the filter on its training set plus the training spam after the white-box greedy
attack (labelled spam), for a number of rounds.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from advlab.spam.attacks import check_budget, greedy_attack
from advlab.spam.models import Features, LinearSpamModel, SpamModel, train_model


class AdversaryAwareNB(SpamModel):
    """Dalvi et al.'s adversary-aware Bernoulli naive Bayes against a greedy adversary with a word budget.

    Args:
        base: the Bernoulli naive Bayes filter the adversary attacks (it must carry its likelihood table).
        budget: the adversary's most changed words per message.
        add: the adversary may add words.
        remove: the adversary may take words out.

    Examples:
        >>> from advlab.spam.models import train_model
        >>> x = np.array([[1.0, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1]]); y = np.array([1, 1, 0, 0])
        >>> aware = AdversaryAwareNB(train_model("bernoulli-nb", x, y), budget=1)
        >>> aware.is_spam(x).tolist()
        [True, True, False, False]
    """

    def __init__(self, base: LinearSpamModel, budget: int, *, add: bool = True, remove: bool = True) -> None:
        if not isinstance(base, LinearSpamModel) or base.likelihood is None:
            raise ValueError(
                "base: the adversary-aware classifier needs a Bernoulli naive Bayes filter (its likelihood table); "
                "train one with train_model('bernoulli-nb', ...)"
            )
        self.base = base
        self.budget = check_budget(budget, base.weights.size)
        self.add = add
        self.remove = remove
        self.name = f"{base.name}+aware"

    def score(self, x: Features) -> np.ndarray:
        """The aware log-odds: the base score on the spam side, raised by ``log(1 + e_1 + ...)`` on the ham side."""
        rows = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
        scores = self.base.score(rows)
        for i in np.flatnonzero(scores <= 0):
            scores[i] += self.log_preimage_mass(rows[i], float(scores[i]))
        return scores

    def preimage_changes(self, row: np.ndarray, score: float) -> np.ndarray:
        """Indices of the changes the greedy adversary could have made to reach ``row`` (see the module doc).

        Args:
            row: a 0/1 message on the ham side.
            score: its base score.

        Returns:
            The feature indices whose undoing yields a spam that the adversary would have turned into ``row``.
        """
        w = self.base.weights
        present = row == 1
        could_add = present & (w < 0) if self.add else np.zeros_like(present)
        could_remove = ~present & (w > 0) if self.remove else np.zeros_like(present)
        open_add = ~present & (w < 0) if self.add else np.zeros_like(present)
        open_remove = present & (w > 0) if self.remove else np.zeros_like(present)
        size = np.abs(w)
        still_open = size[open_add | open_remove]
        largest_open = float(still_open.max()) if still_open.size else 0.0
        return np.flatnonzero((could_add | could_remove) & (size >= largest_open) & (size > -score))

    def log_preimage_mass(self, row: np.ndarray, score: float) -> float:
        """``log(1 + e_1 + ... + e_budget)`` of the likelihood ratios of :meth:`preimage_changes`."""
        table = self.base.likelihood
        assert table is not None  # checked in __init__
        j = self.preimage_changes(row, score)
        if j.size == 0:
            return 0.0
        log_r = np.where(row[j] == 1, table.absent[j] - table.present[j], table.present[j] - table.absent[j])
        log_e = np.full(self.budget + 1, -np.inf)
        log_e[0] = 0.0
        for lr in log_r:  # e_m <- e_m + r * e_{m-1}, highest m first
            log_e[1:] = np.logaddexp(log_e[1:], log_e[:-1] + lr)
        return float(logsumexp(log_e))


def adversarial_training(
    name: str, x: Features, y: np.ndarray, budget: int, rounds: int = 1, seed: int = 0
) -> SpamModel:
    """Fit ``name``, then ``rounds`` times: attack the training spam (white-box greedy), add it as spam, refit.

    Args:
        name: the filter (see :data:`advlab.spam.models.MODEL_NAMES`).
        x: training features (N, V).
        y: training labels, 1 = spam.
        budget: the attack's word budget.
        rounds: attack-and-refit rounds.
        seed: seed of the network's training.

    Returns:
        The refitted filter, named ``NAME+advtrain``.
    """
    rows = sp.csr_matrix(x, dtype=np.float32)
    y = np.asarray(y)
    model = train_model(name, rows, y, seed=seed)
    spam = rows[np.flatnonzero(y == 1)]
    for _ in range(rounds):
        attacked = greedy_attack(model, spam, budget)
        rows = sp.vstack([rows, sp.csr_matrix(attacked.x_adv)]).tocsr()
        y = np.concatenate([y, np.ones(attacked.x_adv.shape[0], dtype=y.dtype)])
        model = train_model(name, rows, y, seed=seed)
    model.name = f"{name}+advtrain"
    return model
