"""advlab.text: vocabulary, the LSTM on normalised embeddings, AT/VAT on embeddings (against advlab's shared code and
finite differences), semi-supervised VAT, saving, the command line; on a tiny generated corpus."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advlab.attacks.fgsm import fgsm
from advlab.cli import main
from advlab.defenses.trades import kl_to
from advlab.defenses.vat import VAT, virtual_adversarial_loss
from advlab.models import Classifier
from advlab.text import (
    EmbeddingAdversarial,
    EmbeddingVAT,
    TextData,
    TextSettings,
    Vocabulary,
    adversarial_perturbation,
    fixed_split,
    load_text_model,
    make_trainer,
    run_text,
    save_text_model,
    text_classifier,
    tokenize,
)
from advlab.text.model import text_network
from advlab.text.training import UNBOUNDED, embedded
from advlab.threat import ThreatModel

GOOD = ["good", "great", "fine", "superb"]
BAD = ["bad", "awful", "dull", "poor"]
FILLER = ["the", "film", "a", "plot", "is", "and", "story", "very", "cast", "it"]


def corpus(n: int = 80, seed: int = 0) -> tuple[list[str], list[int]]:
    """Sentences of 3-8 filler words and one sentiment word; the label says which kind."""
    rng = random.Random(seed)
    sentences, labels = [], []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 7))]
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label else BAD))
        sentences.append(" ".join(words))
        labels.append(label)
    return sentences, labels


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.build(corpus()[0])


def tiny_model(vocab: Vocabulary, seed: int = 0, dim: int = 6) -> Classifier:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return text_classifier(vocab, embedding_dim=dim, hidden=dim, dropout=0.0)


class Head(torch.nn.Module):
    """The network above the embeddings, as a module (for advlab's image code paths)."""

    def __init__(self, model: Classifier, lengths: torch.Tensor) -> None:
        super().__init__()
        self.net, self.lengths = text_network(model), lengths

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net.classify(emb, self.lengths)


# ---------------------------------------------------------------------------------------------- vocabulary


def test_tokenizer_and_vocabulary_on_hand_written_sentences() -> None:
    assert tokenize("  A Good  film .") == ["a", "good", "film", "."]
    vocab = Vocabulary.build(["a good film .", "a bad film", "a film"], min_count=2)
    assert vocab.words == ("<pad>", "<unk>", "a", "film")  # by count, then alphabetically; good/bad/. are rare
    assert vocab.counts == (0, 3, 3, 3)
    x = vocab.encode(["a good film", "film"])
    assert x.dtype == torch.float32
    assert x.tolist() == [[2.0, 1.0, 3.0], [3.0, 0.0, 0.0]]
    assert vocab.encode(["a good film"], max_length=2).tolist() == [[2.0, 1.0]]
    assert vocab.decode(x[1]) == ["film"]
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    assert float(vocab.frequencies().sum()) == pytest.approx(1.0)


def test_encode_refuses_empty_and_unknown_sentences(vocab: Vocabulary) -> None:
    with pytest.raises(ValueError, match=r"sentences\[1\]: the text is empty"):
        vocab.encode(["good film", "   "])
    with pytest.raises(ValueError, match="none of its words .* retrain with a lower min_count"):
        vocab.encode(["zzz qqq"], strict=True)
    assert vocab.encode(["zzz qqq"]).tolist() == [[1.0, 1.0]]  # training data may hold such sentences
    with pytest.raises(TypeError, match="wrap it in a list"):
        vocab.encode("good film")
    with pytest.raises(ValueError, match="empty list"):
        vocab.encode([])
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(["a"], min_count=0)


def test_fixed_split_is_seeded_and_disjoint() -> None:
    train, test = fixed_split(100, test_fraction=0.1, seed=3)
    again = fixed_split(100, test_fraction=0.1, seed=3)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert len(test) == 10 and sorted(train.tolist() + test.tolist()) == list(range(100))
    assert not torch.equal(test, fixed_split(100, test_fraction=0.1, seed=4)[1])


# ---------------------------------------------------------------------------------------------- the network


def test_embeddings_are_normalised_with_frequency_weights(vocab: Vocabulary) -> None:
    net = text_network(tiny_model(vocab))
    f = vocab.frequencies().double().numpy()
    v = net.normalised_embeddings().detach().double().numpy()
    mean = (f[:, None] * v).sum(0)
    var = (f[:, None] * (v - mean) ** 2).sum(0)
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    np.testing.assert_allclose(var, 1.0, atol=1e-4)


def test_padding_does_not_change_the_logits(vocab: Vocabulary) -> None:
    model = tiny_model(vocab).eval()
    alone = vocab.encode(["the film is good"])
    padded = vocab.encode(["the film is good", "a very dull plot and the story is poor"])
    torch.testing.assert_close(model(alone), model(padded)[:1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- AT on embeddings


def test_adversarial_perturbation_has_norm_eps_per_sentence_along_the_gradient(vocab: Vocabulary) -> None:
    model = tiny_model(vocab).double().eval()
    x = vocab.encode(["the film is good", "a dull plot"])
    y = torch.tensor([1, 0])
    emb, head, logits = embedded(model, x)
    threat = ThreatModel("l2", 0.7, UNBOUNDED)
    r = adversarial_perturbation(head, emb, y, threat, logits)
    assert r.shape == emb.shape
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((2,), 0.7, dtype=r.dtype))
    # independent oracle: central finite differences of the first sentence's loss (batch of one: CE = its loss)
    e0 = emb[:1].detach()
    lengths = torch.tensor([4])

    def loss(e: torch.Tensor) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(text_network(model).classify(e, lengths), y[:1]))

    g = torch.zeros_like(e0)
    h = 1e-6
    for idx in np.ndindex(*e0.shape):
        step = torch.zeros_like(e0)
        step[idx] = h
        g[idx] = (loss(e0 + step) - loss(e0 - step)) / (2 * h)
    r0 = adversarial_perturbation(lambda e: text_network(model).classify(e, lengths), e0, y[:1], threat)
    torch.testing.assert_close(r0, 0.7 * g / g.norm(), rtol=1e-5, atol=1e-7)
    assert loss(e0 + r0) > loss(e0)


def test_text_at_is_advlab_l2_fast_gradient_on_the_embeddings(vocab: Vocabulary) -> None:
    model = tiny_model(vocab).eval()
    x = vocab.encode(["the film is good", "a dull plot", "great cast"])
    y = torch.tensor([1, 0, 1])
    emb, head, logits = embedded(model, x)
    threat = ThreatModel("l2", 0.5, UNBOUNDED)
    r = adversarial_perturbation(head, emb, y, threat, logits)
    _, lengths = text_network(model).embed(x)
    result = fgsm(Head(model, lengths).eval(), emb.detach(), y, threat)
    torch.testing.assert_close(result.x_adv - emb.detach(), r, rtol=1e-5, atol=1e-6)
    # the trainer's loss: CE(v) + CE(v + r_adv)
    loss, step_logits = EmbeddingAdversarial(eps=0.5, progress=False).training_step(model, x, y, 0.0)
    expected = F.cross_entropy(logits, y) + F.cross_entropy(head(emb + r), y)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(step_logits, logits)


# ---------------------------------------------------------------------------------------------- VAT on embeddings


def test_vat_divergence_is_non_negative_and_zero_for_identical_predictions() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 3, generator=gen), torch.randn(50, 3, generator=gen)
    assert bool((kl_to(a, b) >= 0).all())
    torch.testing.assert_close(kl_to(a, a), torch.zeros(50), atol=1e-6, rtol=0)
    torch.testing.assert_close(kl_to(a, a + 5.0), torch.zeros(50), atol=1e-5, rtol=0)  # same softmax


def test_text_vat_is_advlab_vat_on_the_embeddings(vocab: Vocabulary) -> None:
    model = tiny_model(vocab).eval()
    x = vocab.encode(["the film is good", "a dull plot", "great cast"])
    text_vat = EmbeddingVAT(eps=0.5, xi=0.1, seed=3, progress=False)
    lds, logits = text_vat.lds(model, x, 0.25)
    emb, lengths = text_network(model).embed(x)
    # the image trainer, unchanged, on a classifier whose inputs are the embeddings
    image_vat = VAT(eps=0.5, xi=0.1, seed=3, progress=False)
    lds_image, logits_image = image_vat.lds(Classifier(Head(model, lengths), bounds=UNBOUNDED), emb.detach(), 0.25)
    torch.testing.assert_close(lds, lds_image)
    torch.testing.assert_close(logits, logits_image)
    head = Head(model, lengths)
    shared = virtual_adversarial_loss(
        head, emb, head(emb), eps=0.5, xi=0.1, generator=text_vat.generator_at(0.25, "cpu")
    )
    torch.testing.assert_close(lds, shared)
    assert float(lds.detach()) >= 0.0


def fit_vat(vocab: Vocabulary, x_u: torch.Tensor | None, alpha: float) -> list[torch.Tensor]:
    sentences, labels = corpus(24, seed=1)
    model = tiny_model(vocab)
    trainer = make_trainer("vat", eps=1.0, epochs=1, batch_size=8, alpha=alpha, seed=0, progress=False)
    trainer.fit(model, (vocab.encode(sentences), torch.tensor(labels)), unlabeled=x_u)
    return [p.detach().clone() for p in model.parameters()]


def test_semi_supervised_vat_learns_from_unlabelled_sentences(vocab: Vocabulary) -> None:
    u1 = vocab.encode(corpus(24, seed=2)[0])
    u2 = vocab.encode(corpus(24, seed=3)[0])
    with_u1, with_u2 = fit_vat(vocab, u1, 1.0), fit_vat(vocab, u2, 1.0)
    assert any(not torch.equal(a, b) for a, b in zip(with_u1, with_u2, strict=True))
    # control: without the LDS term the unlabelled sentences change nothing
    off_u1, off_u2 = fit_vat(vocab, u1, 0.0), fit_vat(vocab, u2, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(off_u1, off_u2, strict=True))


# ---------------------------------------------------------------------------------------------- experiment, files


def test_run_text_learns_the_toy_task_and_reports_neighbours() -> None:
    sentences, labels = corpus(120)
    settings = TextSettings(epochs=3, batch_size=16, lr=1e-2, embedding_dim=8, hidden=8, min_count=1, dropout=0.0)
    result = run_text(sentences, labels, ["baseline", "at"], settings, data_name="toy")
    record = result.to_dict()
    assert [m["method"] for m in record["methods"]] == ["baseline", "at"]
    assert record["split"]["n_test"] == 12
    for m in result.methods:
        assert 0.0 <= m.test_error <= 1.0
        assert len(m.neighbours["good"]) == settings.neighbours
        assert all(p["word"] in ("good", "bad") for p in m.perturbed)
    assert min(m.test_error for m in result.methods) < 0.5
    json.dumps(record, default=str)
    with pytest.raises(ValueError, match="Did you mean 'vat'"):
        run_text(sentences, labels, ["vatt"], settings)


def test_semi_supervised_split_hides_labels() -> None:
    sentences, labels = corpus(100)
    data = TextData.prepare(sentences, labels, TextSettings(unlabeled=0.5, min_count=1))
    assert data.x_unlabeled is not None
    assert data.x_train.shape[0] + data.x_unlabeled.shape[0] == 90
    assert data.x_unlabeled.shape[0] == 45
    with pytest.raises(ValueError, match="unlabeled"):
        TextSettings(unlabeled=1.0)


def test_save_and_load_round_trip(vocab: Vocabulary, tmp_path) -> None:
    model = tiny_model(vocab).eval()
    save_text_model(tmp_path / "m", model, vocab)
    loaded, vocab2 = load_text_model(tmp_path / "m")
    x = vocab.encode(["the film is good", "a dull plot"])
    assert vocab2 == vocab
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(FileNotFoundError, match="advlab text --out"):
        load_text_model(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------- command line


def write_corpus(path, n: int = 60) -> None:
    sentences, labels = corpus(n)
    path.write_text("".join(f"{y}\t{s}\n" for s, y in zip(sentences, labels, strict=True)), encoding="utf-8")


def test_cli_trains_reports_and_saves(tmp_path) -> None:
    data = tmp_path / "toy.tsv"
    write_corpus(data)
    out = tmp_path / "run"
    argv = ["text", "--data", str(data), "--method", "baseline,vat", "--epochs", "1", "--embedding-dim", "6"]
    argv += ["--hidden", "6", "--min-count", "1", "--classify", "a good film", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "report.json").read_text())
    assert [m["method"] for m in record["methods"]] == ["baseline", "vat"]
    assert record["classified"]["vat"][0]["sentence"] == "a good film"
    assert "virtual adversarial training" in (out / "report.html").read_text()
    model, vocab = load_text_model(out / "vat")
    assert model(vocab.encode(["a good film"])).shape == (1, 2)
    assert len(vocab) == len(json.loads((out / "vocabulary.json").read_text())["words"])


@pytest.mark.parametrize(
    ("extra", "lines", "message"),
    [
        (["--method", "vatt"], None, "Did you mean 'vat'"),
        (["--classify", "zzz qqq"], None, "none of its words"),
        (["--classify", "  "], None, "the text is empty"),
        ([], "1\tgood film\n0\t \n", "line 2: the sentence is empty"),
        ([], "good film\n", "found no tab"),
    ],
)
def test_cli_bad_input_names_the_fix(tmp_path, capsys, extra, lines, message) -> None:
    data = tmp_path / "toy.tsv"
    if lines is None:
        write_corpus(data, 20)
    else:
        data.write_text(lines, encoding="utf-8")
    argv = ["text", "--data", str(data), "--epochs", "1", "--hidden", "4", "--embedding-dim", "4", *extra]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


def test_cli_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["text", "--help"])
    assert "advlab text --data rt-polarity --method vat" in capsys.readouterr().out
