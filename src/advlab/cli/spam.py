"""``advlab spam``: spam filters under word-budget attacks (Dalvi et al. 2004; Lowd & Meek 2005) and their defenses."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from advlab.cli._common import add_command, check_output_dir, output_dir

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab spam --out runs/spam                          # SMS Spam Collection from $ADVLAB_DATA; every filter
  advlab spam --models bernoulli-nb,logistic --budget 20 --defense aware --out runs/spam-nb
  advlab spam --models logistic --message "WIN a FREE prize! Call now" --out runs/spam-mine
  advlab spam --corpus my_messages.tsv --defense none --out runs/spam-own     # label<TAB>message lines
"""


def add_parser(sub) -> None:
    from advlab.spam.models import MODEL_NAMES

    p = add_command(
        sub,
        "spam",
        "attack bag-of-words spam filters under a word budget; measure defenses",
        "Train naive Bayes (multinomial, Bernoulli), logistic regression and a small network on binary bag-of-words "
        "features of the SMS Spam Collection (a seeded stratified split), then attack the test spam each filter blocks "
        "within --budget changed words: the white-box greedy attack (add good words, obfuscate spam words: free -> "
        "fr3e), the same with good words only, and Lowd & Meek's query-only first-N good-word attack (filter calls "
        "counted). Optional defenses: Dalvi et al.'s adversary-aware naive Bayes and adversarial training. Writes "
        "DIR/result.json and DIR/report.html.",
        EXAMPLES,
    )
    p.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated filters: " + ", ".join(MODEL_NAMES))
    p.add_argument("--budget", type=int, default=50, help="most words changed per message (>= 1)")
    p.add_argument("--good-words", type=int, default=100, help="good words the query-only search looks for (N)")
    p.add_argument("--defense", default="aware,advtrain", help="comma-separated: aware, advtrain, or none")
    p.add_argument("--corpus", default=None, help="your own label<TAB>message file (labels ham/spam), UTF-8")
    p.add_argument("--data-dir", default=None, help="folder holding sms-spam/ (default: $ADVLAB_DATA, then the cache)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of each class held out for testing")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the stratified split")
    p.add_argument("--n-attack", type=int, default=None, help="attack at most N blocked test spam per filter")
    p.add_argument("--message", action="append", default=[], help="also attack this message (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the network's training")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def settings_of(args: argparse.Namespace):
    """The experiment's settings from the options, with one-line errors that name the fix."""
    from advlab.spam.experiment import SpamSettings

    if args.budget < 1:
        raise ValueError(f"--budget: expected a number of words >= 1, got {args.budget}; try --budget 20")
    if args.good_words < 1:
        raise ValueError(f"--good-words: expected a number >= 1, got {args.good_words}; try --good-words 100")
    if args.n_attack is not None and args.n_attack < 1:
        raise ValueError(f"--n-attack: expected a number >= 1, got {args.n_attack}; leave it out to attack all")
    for i, text in enumerate(args.message):
        if not text.strip():
            raise ValueError(f"--message: message {i + 1} is empty; give it some text or leave the option out")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    defenses = tuple(d.strip() for d in args.defense.split(",") if d.strip() and d.strip() != "none")
    try:
        return SpamSettings(
            models=models,
            budget=args.budget,
            good_words=args.good_words,
            defenses=defenses,
            n_attack=args.n_attack,
            seed=args.seed,
        )
    except ValueError as exc:
        message = str(exc)
        for field, option in (("models:", "--models:"), ("defenses:", "--defense:"), ("budget:", "--budget:")):
            if message.startswith(field):
                message = option + message.removeprefix(field)
        raise ValueError(message) from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from advlab.data.sms_spam import load_sms_spam, parse_labelled_lines, stratified_split
    from advlab.provenance import provenance
    from advlab.reports.spam import write_spam_report
    from advlab.spam.experiment import SpamExperiment

    settings = settings_of(args)
    check_output_dir(args.out)
    if args.corpus is not None:
        path = Path(args.corpus)
        if not path.is_file():
            raise FileNotFoundError(f"--corpus: {path} is not a file; give a label<TAB>message file")
        corpus = parse_labelled_lines(path.read_text(encoding="utf-8"), source=str(path))
    else:
        corpus = load_sms_spam(args.data_dir)
    split = stratified_split(corpus, args.test_fraction, seed=args.split_seed)
    experiment = SpamExperiment(split, settings)
    record = experiment.run()
    if args.message:
        record["messages"] = experiment.attack_texts(list(args.message))
    record["corpus"] = corpus.source
    record["provenance"] = provenance()
    page = write_spam_report(record, output_dir(args.out))
    for name, m in record["models"].items():
        log.info(
            "%s: accuracy %.4f; white-box %.0f%% through (median %s words); query-only %.0f%% through with %d queries",
            name,
            m["test_accuracy"],
            100 * m["white_box"]["success_rate"],
            m["white_box"]["median_words_all"],
            100 * m["query_only"]["success_rate"],
            m["query_only"]["search_queries"] + m["query_only"]["attack_queries"],
        )
    for name, m in record["models"].items():
        for defense, d in m.get("defenses", {}).items():
            log.info("%s + %s: %s", name, defense, _defense_line(d))
    for message in record.get("messages", []):
        outcome = "gets through" if message["through"] else "still blocked"
        if not message["spam_before"]:
            outcome = "was not flagged as spam"
        log.info("%s: %r -> %r (%s words changed; %s)", *_message_fields(message), outcome)
    log.info("wrote %s and %s", page.parent / "result.json", page)
    return 0


def _message_fields(message: dict[str, Any]) -> tuple[Any, ...]:
    return message["model"], message["original"], message["attacked"], message["words"]


def _defense_line(d: dict[str, Any]) -> str:
    """One line of a defense's figures: whatever numbers it recorded at the top level."""
    return ", ".join(f"{k} {v:.4g}" for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
