"""The spam-filter experiment behind ``advlab spam`` and ``bench/spam_words.py``: train, attack, defend, record.

:class:`SpamExperiment` reads top to bottom: :meth:`~SpamExperiment.features` (bag of words on the training
split), :meth:`~SpamExperiment.train`, then per filter :meth:`~SpamExperiment.white_box` (greedy, good words and
spam-word obfuscation), :meth:`~SpamExperiment.query_only` (Lowd & Meek's first-N good words, queries counted)
(and best-N) and :meth:`~SpamExperiment.defend` (Dalvi et al.'s adversary-aware naive Bayes, adversarial training). Attacks run
on the test spam the filter blocks; "words" is the number of changed words. Lowd & Meek's figure of merit is
``median_words_all``: the words that get the median blocked spam through, counting failures as needing more
than the budget (``None`` when fewer than half get through).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from advlab import validation
from advlab.data.sms_spam import TextSplit
from advlab.spam.attacks import GoodWordSearch, QueryCounter, WordAttackResult, greedy_attack, query_attack
from advlab.spam.defense import AdversaryAwareNB, adversarial_training
from advlab.spam.features import BagOfWords, apply_edits, check_texts
from advlab.spam.models import MODEL_NAMES, LinearSpamModel, SpamModel, train_model

log = logging.getLogger(__name__)

DEFENSES = ("aware", "advtrain")
"""``aware``: Dalvi et al.'s adversary-aware Bernoulli naive Bayes; ``advtrain``: adversarial training."""


@dataclass(frozen=True)
class SpamSettings:
    """Settings of one experiment.

    Args:
        models: filters to train (see :data:`~advlab.spam.models.MODEL_NAMES`).
        budget: the most changed words per message.
        good_words: how many good words the query-only search looks for (Lowd & Meek's N).
        defenses: defenses to measure (see :data:`DEFENSES`); empty for none.
        n_attack: attack at most this many blocked test spam per filter (``None``: all).
        min_df: vocabulary words occur in at least this many training messages.
        seed: seed of the network's training.
        examples: attacked messages to show as text per filter.
    """

    models: tuple[str, ...] = MODEL_NAMES
    budget: int = 50
    good_words: int = 100
    defenses: tuple[str, ...] = DEFENSES
    n_attack: int | None = None
    min_df: int = 2
    seed: int = 0
    examples: int = 3

    def __post_init__(self) -> None:
        for name in self.models:
            if name not in MODEL_NAMES:
                raise ValueError(
                    f"models: unknown spam filter {name!r}; use some of {', '.join(MODEL_NAMES)}."
                    + validation.did_you_mean(name, MODEL_NAMES)
                )
        for name in self.defenses:
            if name not in DEFENSES:
                raise ValueError(f"defenses: unknown defense {name!r}; use some of {', '.join(DEFENSES)}")
        if not self.models:
            raise ValueError("models: got none; name at least one of " + ", ".join(MODEL_NAMES))
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(f"budget: expected a whole number of words >= 1, got {self.budget!r}")


def words_summary(result: WordAttackResult) -> dict[str, Any]:
    """:meth:`WordAttackResult.summary` plus Lowd & Meek's median over all messages (failures count as infinite).

    Args:
        result: an attack's result.

    Returns:
        JSON-ready figures.
    """
    out = result.summary()
    needed = np.where(result.success, result.words, np.inf)
    median = float(np.median(needed)) if needed.size else float("inf")
    out["median_words_all"] = median if np.isfinite(median) else None
    return out


class SpamExperiment:
    """Train the filters on a split, attack them within a word budget, measure the defenses.

    Args:
        split: the train/test messages (see :func:`advlab.data.sms_spam.stratified_split`).
        settings: what to run.

    Examples:
        >>> record = SpamExperiment(split, SpamSettings(models=("logistic",), budget=20)).run()
        >>> record["models"]["logistic"]["white_box"]["success_rate"]  # doctest: +SKIP
    """

    def __init__(self, split: TextSplit, settings: SpamSettings) -> None:
        self.split = split
        self.settings = settings
        self.models: dict[str, SpamModel] = {}

    def run(self) -> dict[str, Any]:
        """Every step; returns the JSON-ready record."""
        start = time.perf_counter()
        self.features()
        self.train()
        record: dict[str, Any] = {
            "settings": asdict(self.settings),
            "split": self.split.manifest(),
            "vocabulary": self.bow.size,
            "models": {},
            "messages": [],
        }
        for name, model in self.models.items():
            entry: dict[str, Any] = {"test_accuracy": model.accuracy(self.x_test, self.split.test.labels)}
            entry["white_box"], entry["examples"] = self.white_box(model)
            entry["good_words_only"] = words_summary(self.attack(model, add_only=True))
            entry["query_only"] = self.query_only(model)
            entry["query_best_n"] = self.query_only(model, best=True)
            entry["defenses"] = self.defend(name, model)
            record["models"][name] = entry
            log.debug("%s: %s", name, {k: entry[k] for k in ("test_accuracy", "white_box")})
        record["seconds"] = time.perf_counter() - start
        return record

    def features(self) -> None:
        """Fit the vocabulary on the training messages; vectorise both splits."""
        self.bow = BagOfWords(min_df=self.settings.min_df).fit(self.split.train.texts)
        self.x_train = self.bow.transform(self.split.train.texts)
        self.x_test = self.bow.transform(self.split.test.texts)

    def train(self) -> None:
        """Fit every filter on the training split."""
        for name in self.settings.models:
            self.models[name] = train_model(name, self.x_train, self.split.train.labels, seed=self.settings.seed)

    def blocked_spam(self, model: SpamModel) -> np.ndarray:
        """Test rows that are spam and that ``model`` calls spam (at most ``n_attack``)."""
        rows = np.flatnonzero((self.split.test.labels == 1) & model.is_spam(self.x_test))
        return rows[: self.settings.n_attack] if self.settings.n_attack is not None else rows

    def attack(self, model: SpamModel, *, add_only: bool = False, rows: np.ndarray | None = None) -> WordAttackResult:
        """The white-box greedy attack on the blocked test spam (or ``rows``)."""
        rows = self.blocked_spam(model) if rows is None else rows
        return greedy_attack(model, self.x_test[rows], self.settings.budget, remove=not add_only)

    def white_box(self, model: SpamModel) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Greedy add-and-obfuscate attack: figures, plus a few attacked messages as text (re-vectorised to check)."""
        rows = self.blocked_spam(model)
        result = self.attack(model, rows=rows)
        examples = []
        words = self.bow.words_
        for k in np.flatnonzero(result.success)[: self.settings.examples]:
            text = self.split.test.texts[rows[k]]
            edited = apply_edits(
                text,
                [str(words[j]) for j in result.added[k]],
                [str(words[j]) for j in result.removed[k]],
                vocabulary=self.bow.index_,
            )
            same = bool((self.bow.transform([edited]).toarray()[0] == result.x_adv[k]).all())
            examples.append(
                {"original": text, "attacked": edited, "words": int(result.words[k]), "revectorised_equal": same}
            )
        return words_summary(result), examples

    def query_only(self, model: SpamModel, best: bool = False) -> dict[str, Any]:
        """Lowd & Meek first-N (or best-N): good words found by spam/ham queries, appended to each blocked test spam.

        The adversary's own messages are the first training spam and ham the filter calls so; its word list is
        the vocabulary ordered by how many training messages hold each word (labels unused).
        """
        oracle = QueryCounter(model)
        train_y = self.split.train.labels
        calls = model.is_spam(self.x_train)  # the adversary's own messages: one spam and one ham the filter agrees on
        spam_rows, ham_rows = np.flatnonzero((train_y == 1) & calls), np.flatnonzero((train_y == 0) & ~calls)
        frequency = np.asarray((self.x_train > 0).sum(axis=0)).reshape(-1)  # label-free word list: most common first
        candidates = np.argsort(-frequency, kind="stable")
        try:
            if not (spam_rows.size and ham_rows.size):
                raise ValueError("the filter calls no training spam spam, or no training ham ham")
            spam, ham = self.x_train[int(spam_rows[0])].toarray()[0], self.x_train[int(ham_rows[0])].toarray()[0]
            search = GoodWordSearch(oracle)
            find = search.best_n if best else search.first_n
            found = find(spam, ham, candidates.tolist(), self.settings.good_words)
        except ValueError as exc:  # no barely-spam message: the search cannot start
            log.warning("%s: query-only attack skipped: %s", model.name, exc)
            return {"n": 0, "success_rate": None, "median_words_all": None, "search_queries": oracle.queries,
                    "attack_queries": 0, "skipped": str(exc)}  # fmt: skip
        result = query_attack(oracle, self.x_test[self.blocked_spam(model)], found.words, self.settings.budget)
        out = words_summary(result)
        out.update(
            good_words_found=len(found.words),
            search_queries=found.queries,
            candidates_tried=found.candidates_tried,
            attack_queries=int(result.queries.sum()),
            first_good_words=[str(self.bow.words_[j]) for j in found.words[:10]],
        )
        return out

    def defend(self, name: str, model: SpamModel) -> dict[str, Any]:
        """Measure each requested defense that applies to this filter."""
        out: dict[str, Any] = {}
        if "aware" in self.settings.defenses and isinstance(model, LinearSpamModel) and model.likelihood is not None:
            out["aware"] = self.aware(model)
        if "advtrain" in self.settings.defenses:
            out["advtrain"] = self.advtrain(name)
        return out

    def aware(self, model: LinearSpamModel) -> dict[str, Any]:
        """Adversary-aware naive Bayes: clean accuracy, and spam caught after the attack on the plain filter."""
        aware = AdversaryAwareNB(model, self.settings.budget)
        attacked = self.attack(model)
        caught = aware.is_spam(attacked.x_adv[attacked.success])
        return {
            "test_accuracy": aware.accuracy(self.x_test, self.split.test.labels),
            "ham_flagged": float(aware.is_spam(self.x_test[self.split.test.labels == 0]).mean()),
            "attacked_spam": int(attacked.success.sum()),
            "attacked_spam_caught": float(caught.mean()) if caught.size else None,
            "query_only": self.query_only(aware),
        }

    def advtrain(self, name: str) -> dict[str, Any]:
        """Adversarial training (one round at the experiment's budget), then the white-box attack again."""
        model = adversarial_training(
            name, self.x_train, self.split.train.labels, self.settings.budget, seed=self.settings.seed
        )
        return {
            "test_accuracy": model.accuracy(self.x_test, self.split.test.labels),
            "white_box": words_summary(self.attack(model)),
            "query_only": self.query_only(model),
        }

    def attack_texts(self, texts: list[str]) -> list[dict[str, Any]]:
        """The white-box greedy attack on the user's own messages, against every trained filter.

        Args:
            texts: the messages (non-empty strings).

        Returns:
            Per message and filter: the spam log-odds before and after, whether it got through, the attacked text.
        """
        check_texts("message", texts)
        x = self.bow.transform(texts)
        out = []
        for name, model in self.models.items():
            result = greedy_attack(model, x, self.settings.budget)
            for k, text in enumerate(texts):
                added = [str(self.bow.words_[j]) for j in result.added[k]]
                removed = [str(self.bow.words_[j]) for j in result.removed[k]]
                out.append(
                    {
                        "model": name,
                        "original": text,
                        "spam_before": bool(result.score_before[k] > 0),
                        "through": bool(result.success[k]),
                        "words": int(result.words[k]),
                        "attacked": apply_edits(text, added, removed, vocabulary=self.bow.index_),
                    }
                )
        return out
