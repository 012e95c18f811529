"""``advlab spam`` end to end on an inline corpus file, and its one-line errors."""

from __future__ import annotations

import json

import pytest
from _spam_corpus import corpus_text

from advlab.cli import main


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spam") / "corpus.tsv"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


def test_spam_command_writes_json_and_html(corpus_file, tmp_path):
    out = tmp_path / "run"
    argv = ["spam", "--corpus", str(corpus_file), "--models", "bernoulli-nb,logistic", "--budget", "5"]
    assert main([*argv, "--good-words", "5", "--message", "WIN a FREE prize now", "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    assert set(record["models"]) == {"bernoulli-nb", "logistic"}
    nb = record["models"]["bernoulli-nb"]
    assert nb["white_box"]["budget"] == 5 and 0 <= nb["white_box"]["success_rate"] <= 1
    assert set(nb["defenses"]) == {"aware", "advtrain"} and "aware" not in record["models"]["logistic"]["defenses"]
    assert all(e["revectorised_equal"] for e in nb["examples"])
    assert len(record["messages"]) == 2 and record["split"]["seed"] == 0
    html = (out / "report.html").read_text()
    assert "bernoulli-nb" in html and "adversary-aware" in html


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budget", "0"], "--budget: expected a number of words >= 1, got 0; try --budget 20"),
        (["--models", "svm"], "--models: unknown spam filter 'svm'"),
        (["--message", "  "], "--message: message 1 is empty"),
        (["--defense", "magic"], "--defense: unknown defense 'magic'"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(corpus_file, tmp_path, capsys, args, message):
    assert main(["spam", "--corpus", str(corpus_file), *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
