"""The sentence polarity loader (offline errors, checksum-checked download, decoding) and LABEL<TAB>SENTENCE files;
the real files are checked only where they are present."""

from __future__ import annotations

import hashlib
import io as stdio
import os
import urllib.error
from pathlib import Path

import pytest

from advlab.data import _files, rt_polarity
from advlab.data._files import ChecksumError, CorruptFileError, DatasetNotFoundError, FileSpec
from advlab.data.rt_polarity import load_rt_polarity
from advlab.data.sentences import load_sentences_file

REAL = Path(os.environ.get("ADVLAB_DATA", "/work/shared/data")) / "rt-polarity"


def test_missing_files_offline_name_the_path_and_the_url(tmp_path, monkeypatch) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_rt_polarity(tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "rt-polarity" / "rt-polarity.neg") in msg and "rt-polarity.pos" in msg
    assert rt_polarity.MIRROR + "rt-polarity.neg" in msg

    def unreachable(url, timeout):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(_files, "urlopen", unreachable)
    with pytest.raises(DatasetNotFoundError, match="network is unreachable"):
        load_rt_polarity(tmp_path, download=True)
    assert not list((tmp_path / "rt-polarity").glob("*.neg"))


def test_download_with_the_wrong_bytes_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_files, "urlopen", lambda url, timeout: stdio.BytesIO(b"not the file\n"))
    with pytest.raises(ChecksumError):
        load_rt_polarity(tmp_path, download=True)
    assert not (tmp_path / "rt-polarity" / "rt-polarity.neg").exists()


def test_served_files_are_decoded_as_cp1252(tmp_path, monkeypatch) -> None:
    neg = "".join(f"dull film number {i} \u2014 caf\xe9 .\n" for i in range(rt_polarity.SENTENCES_PER_CLASS))
    pos = "".join(f"fine film number {i} .\n" for i in range(rt_polarity.SENTENCES_PER_CLASS))
    payloads = {"neg": neg.encode("cp1252"), "pos": pos.encode("cp1252")}
    assert b"\x97" in payloads["neg"]  # the dash is one cp1252 byte, as in the real files
    specs = tuple(
        FileSpec(
            s.relpath,
            len(payloads[s.relpath[-3:]]),
            sha256=hashlib.sha256(payloads[s.relpath[-3:]]).hexdigest(),
            urls=s.urls,
        )
        for s in rt_polarity.SPECS
    )
    monkeypatch.setattr(rt_polarity, "SPECS", specs)
    monkeypatch.setattr(_files, "urlopen", lambda url, timeout: stdio.BytesIO(payloads[url[-3:]]))
    sentences, labels = load_rt_polarity(tmp_path, download=True)
    assert len(sentences) == 2 * rt_polarity.SENTENCES_PER_CLASS
    assert sentences[0] == "dull film number 0 \u2014 caf\xe9 ." and labels[0] == 0
    assert sentences[-1].startswith("fine film") and labels[-1] == 1


def test_a_file_with_too_few_sentences_is_corrupt(tmp_path, monkeypatch) -> None:
    payload = b"only one line .\n"
    spec = FileSpec("rt-polarity/rt-polarity.neg", len(payload), sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(rt_polarity, "SPECS", (spec, spec))
    (tmp_path / "rt-polarity").mkdir()
    (tmp_path / "rt-polarity" / "rt-polarity.neg").write_bytes(payload)
    with pytest.raises(CorruptFileError, match="expected 5331 sentences, got 1"):
        load_rt_polarity(tmp_path, download=False)


@pytest.mark.skipif(not (REAL / "rt-polarity.pos").is_file(), reason="the sentence polarity files are not here")
def test_real_files() -> None:
    sentences, labels = load_rt_polarity(REAL.parent, download=False)
    assert len(sentences) == 10662 and int(labels.sum()) == 5331
    assert sentences[0].startswith("simplistic , silly and tedious")
    assert all(s == s.lower() for s in sentences[:100])


def test_sentences_file(tmp_path) -> None:
    path = tmp_path / "s.tsv"
    path.write_text("1\ta good film\n\n0\ta dull film\n", encoding="utf-8")
    sentences, labels = load_sentences_file(path)
    assert sentences == ["a good film", "a dull film"] and labels.tolist() == [1, 0]
    path.write_text("pos\ta good film\n0\tbad\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: the label 'pos' is not a class number"):
        load_sentences_file(path)
    path.write_text("1\ta good film\n1\tfine\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least two classes"):
        load_sentences_file(path)
    with pytest.raises(FileNotFoundError, match="LABEL<TAB>SENTENCE"):
        load_sentences_file(tmp_path / "none.tsv")
