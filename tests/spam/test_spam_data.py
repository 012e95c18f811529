"""The SMS Spam Collection loader: parsing, the seeded stratified split, offline failures, and the real file."""

from __future__ import annotations

import io
import os
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from advlab.data import ChecksumError, CorruptFileError, DatasetNotFoundError
from advlab.data.sms_spam import (
    SMS_SPAM_FILE,
    download_sms_spam,
    load_sms_spam,
    parse_labelled_lines,
    stratified_split,
)

ROOT = Path(os.environ.get("ADVLAB_DATA") or "/work/shared/data")
needs_real = pytest.mark.skipif(not (ROOT / SMS_SPAM_FILE.relpath).is_file(), reason="SMS Spam Collection absent")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))


def test_parse_names_the_bad_line():
    c = parse_labelled_lines("ham\thi there\n\nspam\tWIN now\n")
    assert c.texts == ("hi there", "WIN now") and c.labels.tolist() == [0, 1]
    for bad, what in (("ham hi", "line 1"), ("ham\tok\nspem\tWIN", "line 2"), ("spam\t  ", "line 1")):
        with pytest.raises(CorruptFileError, match=what):
            parse_labelled_lines(bad)


def test_split_is_stratified_seeded_and_recorded(spam_corpus):
    a = stratified_split(spam_corpus, 0.25, seed=3)
    b = stratified_split(spam_corpus, 0.25, seed=3)
    c = stratified_split(spam_corpus, 0.25, seed=4)
    assert np.array_equal(a.test_rows, b.test_rows) and not np.array_equal(a.test_rows, c.test_rows)
    assert sorted(np.concatenate([a.train_rows, a.test_rows]).tolist()) == list(range(len(spam_corpus)))
    counts = spam_corpus.counts()  # 20 spam, 32 ham: a quarter of each held out
    assert a.test.counts() == {"ham": round(counts["ham"] / 4), "spam": round(counts["spam"] / 4)}
    assert a.manifest()["test_rows_sha256"] == b.manifest()["test_rows_sha256"] != c.manifest()["test_rows_sha256"]
    with pytest.raises(ValueError, match="strictly between"):
        stratified_split(spam_corpus, 1.0)


def test_missing_file_offline_says_where_to_put_it(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="sms-spam/SMSSpamCollection"):
        load_sms_spam(tmp_path, download=False)

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetNotFoundError, match="network is unreachable"):
        load_sms_spam(tmp_path)
    assert not (tmp_path / SMS_SPAM_FILE.relpath).exists()


def test_download_refuses_a_wrong_member(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("SMSSpamCollection", "ham\tnot the real file\n")

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response(buffer.getvalue()))
    with pytest.raises(ChecksumError, match="expected 7d039a24"):
        download_sms_spam(tmp_path / "x")
    assert not (tmp_path / "x").exists()


@needs_real
def test_real_file_matches_its_readme():
    corpus = load_sms_spam(ROOT, download=False)
    assert len(corpus) == 5574 and corpus.counts() == {"ham": 4827, "spam": 747}
    assert corpus.texts[0].startswith("Go until jurong point")
    split = stratified_split(corpus, 0.25, seed=0)
    assert split.test.counts() == {"ham": 1207, "spam": 187}
