"""``advlab explain``: figures and numbers that show why a model is fooled, as PNGs and one HTML page."""

from __future__ import annotations

import argparse
import logging

from advlab.cli._common import (
    add_command,
    add_data_options,
    add_model_options,
    check_data_for_model,
    check_output_dir,
    dataset_name,
    load_cli_model,
    load_split,
    resolve_device,
)

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab explain --model runs/m1 --out runs/m1-explain
  advlab explain --model runs/m1 --compare runs/madry --data mnist --eps 0.3 --n 500 --out runs/explain-vs-madry

runs/madry is the adversarially trained model of 'advlab train --help'. --data defaults to the model's dataset.
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "explain",
        "figures that show why a model is fooled",
        "Cross-section maps of class regions (adversarial vs random directions), logits along the FGSM "
        "direction, accuracy under adversarial vs random perturbations of the same size, input-gradient "
        "amplitudes, and class visualisations (standard models give noise, robust ones recognisable classes). "
        "Writes DIR/explain.html (self-contained), DIR/explain.json and one PNG per figure.",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--compare", default=None, help="a second model folder shown beside the first (e.g. a robust one)")
    add_data_options(p, default=None)
    add_model_options(p)
    p.add_argument("--n", type=int, default=200, help="test examples used for the statistics")
    p.add_argument("--eps", type=float, default=0.3, help="L∞ radius for the perturbation comparison")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from advlab.explain import explain

    check_output_dir(args.out)
    device = resolve_device(args.device)
    model = load_cli_model(args, device=device)
    compare = (
        load_cli_model(args, args.compare, device=device, option="--compare", card_options=False)
        if args.compare
        else None
    )
    data_name = dataset_name(args.data, model)
    data = load_split(data_name, "test", args.data_dir, args.n, files=args)
    check_data_for_model(data, model)
    if compare is not None:
        check_data_for_model(data, compare, "--compare")
    labels = (Path(args.model).name, Path(args.compare).name if args.compare else "compare")
    if labels[0] == labels[1]:
        labels = (labels[0] + " (1)", labels[1] + " (2)")
    report = explain(model, data, compare=compare, labels=labels, n=args.n, eps=args.eps, seed=args.seed)
    path = report.write(args.out, title=f"Why {labels[0]} is fooled")
    for note in report.notes:
        log.info("note: %s", note)
    log.info("wrote %s", path)
    return 0
