"""Fixtures of the spam tests: the inline corpus and its seeded split."""

from __future__ import annotations

import pytest
from _spam_corpus import corpus_text

from advlab.data.sms_spam import parse_labelled_lines, stratified_split


@pytest.fixture(scope="session")
def spam_corpus():
    return parse_labelled_lines(corpus_text())


@pytest.fixture(scope="session")
def spam_split(spam_corpus):
    return stratified_split(spam_corpus, 0.25, seed=0)
