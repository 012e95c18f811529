"""``advlab text``: adversarial and virtual adversarial training on word embeddings (Miyato et al. 2016)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from advlab.cli._common import add_command, check_output_dir, output_dir, positive_float, positive_int, show_progress

log = logging.getLogger("advlab")

DATASET = "rt-polarity"

EXAMPLES = """\
  advlab text --data rt-polarity --method vat --epochs 5 --out runs/text-vat
  advlab text --data rt-polarity --method baseline,at,vat,at-vat --out runs/text   # BENCHMARKS.md's setting
  advlab text --data rt-polarity --method at-vat --epochs 10 --embedding-dim 128 --hidden 128 --out runs/text-big
  advlab text --data rt-polarity --method baseline,vat --unlabeled 0.5 --out runs/text-semi   # half the labels hidden
  advlab text --data reviews.tsv --method at --eps 2.5 --classify "a gripping , funny film" --out runs/mine
"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "text",
        "adversarial / virtual adversarial training of a text classifier on word embeddings",
        "Train an LSTM text classifier on normalised word embeddings with one or more methods (baseline, at: "
        "adversarial training, vat: virtual adversarial training, at-vat: both; Miyato, Dai & Goodfellow 2016) on a "
        "fixed seeded train/test split, and report the test error of each, the nearest words of --probe words in each "
        "model's embedding space, and the nearest words to a probe word's embedding after an adversarial perturbation. "
        "Writes DIR/report.json, DIR/report.html, DIR/vocabulary.json and DIR/METHOD/model.safetensors (+ vocabulary).",
        EXAMPLES,
    )
    p.add_argument(
        "--data",
        default=DATASET,
        help="rt-polarity (the sentence polarity set, from --data-dir / $ADVLAB_DATA, downloaded when missing) or a "
        "UTF-8 text file of LABEL<TAB>SENTENCE lines",
    )
    p.add_argument("--data-dir", default=None, help="folder holding rt-polarity/ (default: $ADVLAB_DATA, the cache)")
    p.add_argument("--no-download", action="store_true", help="never download missing data files")
    p.add_argument("--method", default="vat", help="comma-separated: baseline, at, vat, at-vat")
    p.add_argument("--epochs", type=positive_int, default=4, help="passes over the training data")
    p.add_argument("--batch-size", type=positive_int, default=64, help="labelled sentences per step")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate")
    p.add_argument("--eps", type=positive_float, default=1.0, help="L2 norm of the perturbation per sentence")
    p.add_argument("--xi", type=positive_float, default=0.1, help="VAT finite-difference scale")
    p.add_argument("--embedding-dim", type=positive_int, default=64, help="word vector size")
    p.add_argument("--hidden", type=positive_int, default=64, help="LSTM units")
    p.add_argument("--dropout", type=float, default=0.5, help="dropout on the embeddings in training")
    p.add_argument("--min-count", type=positive_int, default=2, help="rarer training words become <unk>")
    p.add_argument("--max-length", type=positive_int, default=60, help="tokens kept per sentence")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of the sentences held out for testing")
    p.add_argument(
        "--unlabeled",
        type=float,
        default=0.0,
        help="share of the training part with labels hidden: vat and at-vat use those sentences unlabelled, baseline "
        "and at train on the labelled rest alone",
    )
    p.add_argument("--probe", action="append", default=None, help="word whose neighbours are reported (repeatable)")
    p.add_argument("--classify", action="append", default=[], help="a sentence to classify with each model")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the training")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def read_data(args: argparse.Namespace) -> tuple[list[str], Any, str]:
    """The sentences, labels and data name that ``--data`` names."""
    from advlab.data.rt_polarity import load_rt_polarity
    from advlab.data.sentences import load_sentences_file

    if args.data.lower() in (DATASET, "rt_polarity", "mr"):
        sentences, labels = load_rt_polarity(args.data_dir, download=not args.no_download)
        return sentences, labels, DATASET
    path = Path(args.data)
    if not path.is_file():
        raise ValueError(
            f"--data: {args.data!r} is neither {DATASET} nor a file; give {DATASET} or a LABEL<TAB>SENTENCE file"
        )
    sentences, labels = load_sentences_file(path)
    return sentences, labels, str(path)


def settings_of(args: argparse.Namespace) -> Any:
    """The :class:`~advlab.text.TextSettings` of the command line."""
    from advlab.text import TextSettings

    return TextSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        eps=args.eps,
        xi=args.xi,
        embedding_dim=args.embedding_dim,
        hidden=args.hidden,
        dropout=args.dropout,
        min_count=args.min_count,
        max_length=args.max_length,
        test_fraction=args.test_fraction,
        unlabeled=args.unlabeled,
        seed=args.seed,
        probes=tuple(args.probe or ("good", "bad")),
    )


def classify(model: Any, vocab: Any, sentences: list[str]) -> list[dict[str, Any]]:
    """Each sentence's predicted class and probabilities under ``model``."""
    import torch

    if not sentences:
        return []
    x = vocab.encode(sentences, strict=True)
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x), dim=1)
    return [
        {"sentence": s, "label": int(p.argmax()), "probabilities": [round(float(v), 4) for v in p]}
        for s, p in zip(sentences, probs, strict=True)
    ]


def run(args: argparse.Namespace) -> int:
    from advlab import io
    from advlab.provenance import provenance
    from advlab.reports.text import write_text_report
    from advlab.text import TextData, TextResult, save_text_model, train_method
    from advlab.text.training import check_method

    check_output_dir(args.out)
    methods = [check_method(m.strip()) for m in args.method.split(",") if m.strip()]
    if not methods or len(set(methods)) != len(methods):
        raise ValueError(f"--method: expected distinct methods among baseline, at, vat, at-vat, got {args.method!r}")
    settings = settings_of(args)
    sentences, labels, name = read_data(args)
    data = TextData.prepare(sentences, labels, settings)
    if args.classify:
        data.vocab.encode(args.classify, strict=True)  # refuse empty or all-unknown sentences before training
    out = output_dir(args.out)
    io.write_json(out / "vocabulary.json", data.vocab.to_dict())
    results, predictions = [], {}
    for method in methods:
        result = train_method(method, data, settings, progress=show_progress(args))
        if result.model is None:  # pragma: no cover - train_method always returns its model
            raise RuntimeError(f"{method}: no model was trained")
        save_text_model(out / method, result.model, data.vocab)
        predictions[method] = classify(result.model, data.vocab, args.classify)
        results.append(result)
    record = TextResult(name, settings, data.summary(), results, provenance()).to_dict()
    record["classified"] = predictions
    json_path, html_path = write_text_report(record, out)
    for r in results:
        log.info("%-8s test error %.2f%%  (%.0f s)", r.method, 100 * r.test_error, r.seconds)
    log.info("wrote %s, %s and the models under %s", json_path, html_path, out)
    return 0
