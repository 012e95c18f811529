"""``advlab fooling``: fooling images per class by gradient ascent (Nguyen et al. 2015) and the rubbish-class rate of noise."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from advlab.cli._common import add_command, add_run_options, output_dir, resolve_device

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab fooling --model runs/m1 --out runs/m1-fooling
  advlab fooling --model runs/m1 --start blank --confidence 0.999 --steps 1000 --out runs/m1-fooling-blank
  advlab fooling --model runs/m1 --noise-n 10000 --noise-mean 0.5 --noise-std 0.25 --out runs/m1-rubbish
"""


def add_parser(sub) -> None:
    p = add_command(
        sub, "fooling", "fooling images per class and the rubbish-class rate of Gaussian noise",
        "For every class, optimise an input by gradient ascent on the class's log-probability (the directly encoded, "
        "gradient-based variant of Nguyen et al. 2015, not their evolutionary/CPPN search) from noise or a blank image "
        "until the model is --confidence sure; report per class whether it was reached, the confidence and the steps. "
        "Also report the fraction of Gaussian-noise inputs the model classifies with confidence > --threshold "
        "(Goodfellow et al.'s rubbish-class measurement). Writes DIR/result.json and DIR/fooling.png.",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--start", default="noise", choices=["noise", "blank", "gray"], help="starting image")
    p.add_argument("--confidence", type=float, default=0.99, help="softmax confidence to reach")
    p.add_argument("--steps", type=int, default=500, help="maximum gradient-ascent steps")
    p.add_argument("--step-size", type=float, default=0.01, help="linf step per iteration")
    p.add_argument("--l2", type=float, default=0.0, help="weight of an L2 prior keeping the image near its start")
    p.add_argument("--noise-n", type=int, default=1000, help="Gaussian-noise inputs for the rubbish-class rate")
    p.add_argument("--noise-mean", type=float, default=None, help="noise mean (default: the model's normalisation mean)")
    p.add_argument("--noise-std", type=float, default=None, help="noise std (default: the model's normalisation std)")
    p.add_argument("--threshold", type=float, default=0.5, help="confidence threshold of the rubbish-class rate")
    add_run_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab import io
    from advlab.attacks.fooling import fooling_images, rubbish_class_rate
    from advlab.provenance import provenance
    from advlab.zoo import load_model

    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    fool = fooling_images(
        model, start=args.start, confidence=args.confidence, steps=args.steps, step_size=args.step_size, l2=args.l2,
        generator=args.seed,
    )
    rubbish = rubbish_class_rate(
        model, n=args.noise_n, mean=args.noise_mean, std=args.noise_std, threshold=args.threshold,
        generator=args.seed + 1, batch_size=args.batch_size,
    )
    out = output_dir(args.out)
    record = {
        "fooling_images": fool.to_dict(), "rubbish_class": rubbish.to_dict(),
        "model": {"path": str(Path(args.model).resolve()), "card": model.card}, "seed": args.seed,
        "device": str(device), "provenance": provenance(),
    }
    io.write_json(out / "result.json", record)
    try:
        from advlab.reports.figures import example_grid

        x = fool.x.cpu()
        io.write_bytes(out / "fooling.png", example_grid(x, x, fool.classes, fool.classes, fool.classes, model.card.get("classes"), None))
    except ImportError:  # reports package absent in a minimal install
        log.warning("fooling.png skipped: advlab.reports is not available")
    log.info("fooling images: %d/%d classes reached %.3g confidence (%s start) in %.2fs; steps %s",
             int(fool.reached.sum()), len(fool.classes), args.confidence, args.start, fool.seconds, fool.steps.tolist())
    log.info("rubbish class: %.3f of %d noise inputs classified with confidence > %g (%s)",
             rubbish.fraction, rubbish.n, rubbish.threshold, rubbish.distribution)
    log.info("wrote %s", out / "result.json")
    return 0
