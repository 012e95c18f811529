"""Word attacks against independent oracles: brute-force minimum word changes on a linear filter, exact query counts,
Dalvi et al.'s adversary-aware score by enumerating every message, and attacked text that re-vectorises exactly."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from advlab.spam.attacks import GoodWordSearch, QueryCounter, greedy_attack, query_attack
from advlab.spam.defense import AdversaryAwareNB, adversarial_training
from advlab.spam.features import BagOfWords, apply_edits, obfuscate
from advlab.spam.models import Likelihood, LinearSpamModel, train_mlp


def brute_force_words(w, b, x, budget, add=True, remove=True):
    """Fewest flips (of allowed kinds) that bring w.x + b to <= 0, or None within the budget."""
    allowed = [j for j in range(len(x)) if (add and x[j] == 0) or (remove and x[j] == 1)]
    for k in range(budget + 1):
        for flips in itertools.combinations(allowed, k):
            z = x.copy()
            z[list(flips)] = 1 - z[list(flips)]
            if w @ z + b <= 0:
                return k
    return None


@pytest.mark.parametrize("add,remove", [(True, True), (True, False), (False, True)])
def test_greedy_is_optimal_for_a_linear_filter(add, remove):
    rng = np.random.default_rng(1)
    for trial in range(60):
        v = 7
        w, b = rng.normal(size=v), float(rng.normal())
        x = (rng.random((1, v)) < 0.5).astype(np.float64)
        budget = int(rng.integers(1, v + 1))
        result = greedy_attack(LinearSpamModel(w, b), x, budget, add=add, remove=remove)
        best = brute_force_words(w, b, x[0], budget, add, remove)
        assert bool(result.success[0]) == (best is not None), trial
        assert result.words[0] <= budget
        if best is not None:
            assert result.words[0] == best, trial
        changed = np.flatnonzero(result.x_adv[0] != x[0])
        assert sorted(changed.tolist()) == sorted(result.added[0] + result.removed[0])
        assert result.score_after[0] == pytest.approx(w @ result.x_adv[0] + b)


def test_greedy_never_exceeds_the_budget_on_a_network(spam_split):
    bow = BagOfWords(min_df=1).fit(spam_split.train.texts)
    x = bow.transform(spam_split.train.texts)
    mlp = train_mlp(x, spam_split.train.labels, epochs=100, seed=0)
    spam = x[spam_split.train.labels == 1]
    for budget in (1, 2, 4):
        r = greedy_attack(mlp, spam, budget)
        assert (r.words <= budget).all()
        assert ((r.x_adv != spam.toarray()).sum(1) == r.words).all()
        assert (r.success == ~mlp.is_spam(r.x_adv)).all()
    assert greedy_attack(mlp, spam, 4).success.mean() >= greedy_attack(mlp, spam, 1).success.mean()


def test_bad_budgets_name_the_fix():
    m = LinearSpamModel(np.ones(3), 0.5)
    with pytest.raises(ValueError, match="budget of 0 changes nothing"):
        greedy_attack(m, np.ones((1, 3)), 0)
    with pytest.raises(ValueError, match="1 to 3 words"):
        greedy_attack(m, np.ones((1, 3)), 4)
    with pytest.raises(TypeError, match="whole number"):
        greedy_attack(m, np.ones((1, 3)), 2.5)


class CountingModel(LinearSpamModel):
    """Counts the rows it scores: an oracle of the query count independent of QueryCounter."""

    rows = 0

    def score(self, x):
        self.rows += x.shape[0]
        return super().score(x)


W = np.array([2.0, 1.0, 1.0, -0.6, -5.0, -0.4, -3.0])


def test_first_n_queries_are_exact():
    model = CountingModel(W, -1.5)
    oracle = QueryCounter(model)
    spam, ham = np.array([1.0, 1, 1, 0, 0, 0, 0]), np.zeros(7)
    # barely spam: adding word 0 to the empty ham gives 0.5 > 0 (1 query); then words 3 (-0.1: ham), 4 (ham),
    # 5 (0.1: spam), 6 (ham) are tried one query each
    found = GoodWordSearch(oracle).first_n(spam, ham, [3, 4, 5, 6], n=2)
    assert found.words == [3, 4] and found.queries == 3 and found.candidates_tried == 2
    found = GoodWordSearch(oracle).first_n(spam, ham, [0, 3, 4, 5, 6], n=3)  # word 0 is in the message: skipped
    assert found.words == [3, 4, 6] and found.queries == 5 and found.candidates_tried == 4
    assert found.barely_spam.tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert oracle.queries == 8 == model.rows


def test_query_attack_counts_one_query_per_word_plus_one():
    model = CountingModel(W, -1.5)
    oracle = QueryCounter(model)
    x = np.array([[1.0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
    r = query_attack(oracle, x[:2], [5, 3, 6], budget=7)
    # message 0 (2.5): +5 -> 2.1, +3 -> 1.5, +6 -> -1.5: 3 words, 4 queries; message 1 is ham already: 1 query
    assert r.words.tolist() == [3, 0] and r.queries.tolist() == [4, 1] and r.success.tolist() == [True, True]
    assert oracle.queries == 5 == model.rows - 4  # the record's before/after scores are not queries
    r = query_attack(QueryCounter(model), x[2:], [5, 3, 6], budget=2)
    assert r.words.tolist() == [2] and r.queries.tolist() == [3] and not r.success[0]


def greedy_adversary(w, b, x, budget):
    """Dalvi's adversary by enumeration: the fewest changes to ham, ties broken by the lowest score; else x."""
    if w @ x + b <= 0:
        return x
    useful = [j for j in range(len(x)) if (1 - 2 * x[j]) * w[j] < 0]
    for k in range(1, budget + 1):
        best = None
        for flips in itertools.combinations(useful, k):
            z = x.copy()
            z[list(flips)] = 1 - z[list(flips)]
            if w @ z + b <= 0 and (best is None or w @ z < w @ best):
                best = z
        if best is not None:
            return best
    return x


@pytest.mark.parametrize("seed,budget", [(0, 1), (1, 2), (2, 3), (3, 2)])
def test_adversary_aware_score_matches_enumeration(seed, budget):
    rng = np.random.default_rng(seed)
    v = 6
    p = rng.uniform(0.05, 0.95, v)  # P(word | spam)
    q = rng.uniform(0.05, 0.95, v)  # P(word | ham)
    prior = math.log(0.3 / 0.7)
    w = np.log(p * (1 - q) / (q * (1 - p)))
    b = prior + np.log((1 - p) / (1 - q)).sum()
    base = LinearSpamModel(w, b, "bernoulli-nb", Likelihood(np.log(p), np.log(1 - p)))
    aware = AdversaryAwareNB(base, budget)
    messages = np.array(list(itertools.product([0.0, 1.0], repeat=v)))
    likelihood = {tuple(m): float(np.prod(np.where(m == 1, p, 1 - p))) for m in messages}
    mass = dict.fromkeys(likelihood, 0.0)  # P_A(x | spam) = sum of P(x' | spam) over x' the adversary sends as x
    for m in messages:
        mass[tuple(greedy_adversary(w, b, m, budget))] += likelihood[tuple(m)]
    scores = aware.score(messages)
    for m, s in zip(messages, scores, strict=True):
        plain = float(w @ m + b)
        if plain > 0:
            assert s == pytest.approx(plain)  # the spam side stays spam (the documented departure)
        else:
            assert s == pytest.approx(plain + math.log(mass[tuple(m)] / likelihood[tuple(m)]), abs=1e-9)


def test_adversary_aware_needs_bernoulli_nb():
    with pytest.raises(ValueError, match="bernoulli-nb"):
        AdversaryAwareNB(LinearSpamModel(np.ones(3), 0.0), 1)


def test_adversarial_training_adds_the_attacked_spam(spam_split):
    bow = BagOfWords(min_df=1).fit(spam_split.train.texts)
    x, y = bow.transform(spam_split.train.texts), spam_split.train.labels
    model = adversarial_training("logistic", x, y, budget=3)
    assert model.name == "logistic+advtrain"
    assert model.accuracy(x, y) == 1.0


def test_obfuscation_leaves_the_vocabulary_and_the_text_revectorises(spam_split):
    bow = BagOfWords(min_df=1).fit(spam_split.train.texts)
    assert obfuscate("free") == "fr3e"
    assert obfuscate("free", {"fr3e", "fr33"}) not in {"free", "fr3e", "fr33"}
    assert obfuscate("xyz", {"xyzz"}) == "xyzzz"
    spam = [t for t, y in zip(spam_split.test.texts, spam_split.test.labels, strict=True) if y == 1]
    x = bow.transform(spam)
    rng = np.random.default_rng(0)
    model = LinearSpamModel(rng.normal(size=bow.size), 0.5)  # any filter: the attack's edits are what is checked
    r = greedy_attack(model, x, 5)
    for mode in ("obfuscate", "delete"):
        for k, text in enumerate(spam):
            edited = apply_edits(
                text, [bow.words_[j] for j in r.added[k]], [bow.words_[j] for j in r.removed[k]], mode, bow.index_
            )
            assert (bow.transform([edited]).toarray()[0] == r.x_adv[k]).all(), (mode, edited)
    with pytest.raises(ValueError, match="mode"):
        apply_edits("a b", mode="erase")


def test_best_n_ranks_by_weight_with_exact_queries():
    w = np.array([2.0, 2.0, 1.0, -0.6, -5.0, -0.4, -3.0])
    model = CountingModel(w, -1.5)
    oracle = QueryCounter(model)
    spam, ham = np.array([1.0, 1, 1, 0, 0, 0, 0]), np.zeros(7)
    # barely spam [1,0,...] (0.5; 1 query); good words among 1..6: 3 (-0.1), 4, 6 (6 queries); spam words on the
    # barely-ham empty message (-1.5): only word 1 (0.5), 6 queries; ranking, one query per good word (S = 1):
    # 3 + word 1 -> 1.9 spam (cancels 0), 4 -> -2.5 and 6 -> -0.5 ham (cancel 1)
    best = GoodWordSearch(oracle).best_n(spam, ham, [1, 2, 3, 4, 5, 6], n=2, spam_words=5)
    assert best.words == [4, 6] and best.queries == 16 == oracle.queries == model.rows
    assert best.last_word == 0


def test_best_n_finds_the_most_negative_weights():
    rng = np.random.default_rng(5)
    w = rng.normal(size=40)
    model = LinearSpamModel(w, 0.0)
    spam, ham = (w > 0).astype(float), np.zeros(40)
    best = GoodWordSearch(QueryCounter(model)).best_n(spam, ham, list(range(40)), n=3, spam_words=40)
    barely = best.barely_spam
    good = [j for j in range(40) if barely[j] == 0 and model.score((barely + np.eye(40)[j])[None])[0] <= 0]
    # the yardstick counts whole spam words cancelled, so weights within one spam word of each other tie (here the
    # first spam word weighs 1.14): the best two are found, the third is any of the tied ones
    assert best.words[:2] == sorted(good, key=lambda j: w[j])[:2] and set(best.words) <= set(good)
