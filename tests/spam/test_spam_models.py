"""Spam filters against hand arithmetic: naive Bayes log-odds on a four-message corpus, and scikit-learn's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.naive_bayes import BernoulliNB, MultinomialNB

from advlab.spam.features import BagOfWords
from advlab.spam.models import MODEL_NAMES, train_mlp, train_model

TEXTS = ["free prize", "free cash", "see you", "prize see"]
LABELS = np.array([1, 1, 0, 0])


@pytest.fixture(scope="module")
def tiny():
    bow = BagOfWords(min_df=1).fit(TEXTS)
    return bow, bow.transform(TEXTS)


def test_vocabulary_is_the_sorted_words(tiny):
    bow, x = tiny
    assert list(bow.words_) == ["cash", "free", "prize", "see", "you"]
    assert x.toarray().tolist()[1] == [1, 1, 0, 0, 0]


def test_multinomial_nb_log_odds_by_hand(tiny):
    # Laplace (alpha 1): spam word counts cash 1, free 2, prize 1, see 0, you 0 (total 4, + 5 words) -> theta = c+1 / 9;
    # ham: cash 0, free 0, prize 1, see 2, you 1. Equal priors. "free you": log(3/9 / 1/9) + log(1/9 / 2/9) = log 1.5
    bow, x = tiny
    model = train_model("multinomial-nb", x, LABELS)
    assert model.score(bow.transform(["free you"]))[0] == pytest.approx(math.log(1.5), abs=1e-12)
    assert model.bias == pytest.approx(0.0, abs=1e-12)
    assert model.weights[bow.index_["cash"]] == pytest.approx(math.log(2.0), abs=1e-12)


def test_bernoulli_nb_log_odds_by_hand(tiny):
    # p_j = (spam docs with j + 1) / (2 + 2): cash 2/4, free 3/4, prize 2/4, see 1/4, you 1/4; ham q_j: 1/4, 1/4, 2/4,
    # 3/4, 2/4. "free you": P(x|spam) = 3/4 * 1/4 * (1-2/4) * (1-2/4) * (1-1/4) = 9/256 and
    # P(x|ham) = 1/4 * 2/4 * (1-1/4) * (1-2/4) * (1-3/4) = 3/256, so the log-odds is log 3.
    bow, x = tiny
    model = train_model("bernoulli-nb", x, LABELS)
    assert model.score(bow.transform(["free you"]))[0] == pytest.approx(math.log(3.0), abs=1e-12)
    assert model.likelihood is not None
    assert np.exp(model.likelihood.present).tolist() == pytest.approx([0.5, 0.75, 0.5, 0.25, 0.25])


def test_linear_forms_match_sklearn_joint_log_likelihood():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(np.float64)
    y = (x[:, :3].sum(1) + rng.random(40) > 1.2).astype(int)
    for name, est in (("multinomial-nb", MultinomialNB(alpha=1.0)), ("bernoulli-nb", BernoulliNB(alpha=1.0))):
        jll = est.fit(x, y).predict_joint_log_proba(x)
        ours = train_model(name, x, y).score(x)
        assert ours == pytest.approx(jll[:, 1] - jll[:, 0], abs=1e-9), name


def test_every_filter_learns_the_inline_corpus(spam_split):
    bow = BagOfWords(min_df=1).fit(spam_split.train.texts)
    x_train, x_test = bow.transform(spam_split.train.texts), bow.transform(spam_split.test.texts)
    for name in MODEL_NAMES[:3]:
        model = train_model(name, x_train, spam_split.train.labels, seed=0)
        assert model.accuracy(x_test, spam_split.test.labels) == 1.0, name
    mlp = train_mlp(x_train, spam_split.train.labels, epochs=100, seed=0)  # 39 messages: one Adam step per epoch
    assert mlp.accuracy(x_test, spam_split.test.labels) == 1.0


def test_bad_model_inputs_name_the_fix(tiny):
    _, x = tiny
    with pytest.raises(ValueError, match="unknown spam filter 'svm'; use one of"):
        train_model("svm", x, LABELS)
    with pytest.raises(ValueError, match="both ham"):
        train_model("logistic", x, np.ones(4, int))
    with pytest.raises(ValueError, match="empty"):
        BagOfWords().fit(["free", "  "])
    with pytest.raises(ValueError, match="no messages"):
        BagOfWords().fit([])
