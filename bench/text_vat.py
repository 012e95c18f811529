"""Adversarial and virtual adversarial training on word embeddings (Miyato, Dai & Goodfellow 2016), sentence polarity.

Trains one small LSTM text classifier per method (baseline, adversarial, virtual adversarial, both) on a fixed
seeded 90/10 split of the sentence polarity data (``$ADVLAB_DATA/rt-polarity``, 10,662 sentences) with
``advlab.text.run_text``, one CPU thread, and prints the test error of each beside the figures of Miyato et al.
(Table 5, Rotten Tomatoes). Their setting differs on purpose (this is a CPU benchmark): they pretrain the
embeddings and the LSTM as a language model on unlabelled text and use a larger LSTM; here nothing is pretrained,
the network is small and trained for a few epochs. ``--unlabeled 0.5`` hides half of the training labels
(semi-supervised VAT; the baseline and AT then train on the labelled half alone).

Usage:
    OMP_NUM_THREADS=1 nice python bench/text_vat.py                    # writes bench/out/text_vat/result.json
    OMP_NUM_THREADS=1 nice python bench/text_vat.py --unlabeled 0.5 --methods baseline,vat --out bench/out/text_vat_semi
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

PAPER_TEST_ERROR = {"baseline": 0.179, "at": 0.168, "vat": 0.191, "at-vat": 0.166}
"""Miyato et al. 2016 (arXiv:1605.07725v4), Table 5, Rotten Tomatoes test error, quoted from memory and not checked against the paper text (see BENCHMARKS.md)."""


def main() -> None:
    from advlab.data.rt_polarity import load_rt_polarity
    from advlab.provenance import provenance
    from advlab.text import TextData, TextResult, TextSettings, train_method

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/text_vat")
    ap.add_argument("--methods", default="baseline,vat,at,at-vat")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--embedding-dim", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--eps", type=float, default=1.0)
    ap.add_argument("--unlabeled", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)

    settings = TextSettings(
        epochs=args.epochs,
        lr=args.lr,
        embedding_dim=args.embedding_dim,
        hidden=args.hidden,
        eps=args.eps,
        unlabeled=args.unlabeled,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    data = TextData.prepare(*load_rt_polarity(), settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for method in args.methods.split(","):  # the record is rewritten after each method (a cut run keeps its part)
        results.append(train_method(method, data, settings))
        result = TextResult("rt-polarity", settings, data.summary(), results, provenance())
        record = result.to_dict()
        record["paper_test_error"] = PAPER_TEST_ERROR
        record["wall_seconds"] = time.perf_counter() - t0
        (out / "result.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"split: {record['split']}  (seed {args.seed})")
    print("| method | test error (ours) | paper (Table 5) | difference | train time |")
    print("|---|---|---|---|---|")
    for m in result.methods:
        paper = PAPER_TEST_ERROR[m.method]
        diff = 100 * (m.test_error - paper)
        print(f"| {m.method} | {100 * m.test_error:.2f}% | {100 * paper:.1f}% | {diff:+.1f} pt | {m.seconds:.0f} s |")
    for m in result.methods:
        for word, near in m.neighbours.items():
            print(f"{m.method:8s} {word:5s}: {', '.join(w for w, _ in near)}")
    print(f"wrote {out / 'result.json'} ({record['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
