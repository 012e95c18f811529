"""``advlab fooling``: fooling images per class by gradient ascent (Nguyen et al. 2015) and the rubbish-class rate of noise."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from advlab.cli._common import (
    add_command,
    add_model_options,
    add_run_options,
    check_output_dir,
    load_cli_model,
    output_dir,
    positive_int,
    resolve_device,
)

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab fooling --model runs/m1 --out runs/m1-fooling
  advlab fooling --model runs/m1 --start blank --confidence 0.999 --steps 1000 --out runs/m1-fooling-blank
  advlab fooling --model runs/m1 --noise-n 10000 --noise-mean 0.5 --noise-std 0.25 --out runs/m1-rubbish
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "fooling",
        "fooling images per class and the rubbish-class rate of Gaussian noise",
        "For every class, optimise an input by gradient ascent on the class's log-probability (the directly encoded, "
        "gradient-based variant of Nguyen et al. 2015, not their evolutionary/CPPN search) from noise or a blank image "
        "until the model is --confidence sure; report per class whether it was reached, the confidence and the steps. "
        "Also report the fraction of Gaussian-noise inputs the model classifies with confidence > --threshold "
        "(Goodfellow et al.'s rubbish-class measurement). Writes DIR/result.json and DIR/fooling.png.",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder")
    add_model_options(p)
    p.add_argument("--start", default="noise", choices=["noise", "blank", "gray"], help="starting image")
    p.add_argument("--confidence", type=float, default=0.99, help="softmax confidence to reach")
    p.add_argument("--steps", type=int, default=500, help="maximum gradient-ascent steps")
    p.add_argument("--step-size", type=float, default=0.01, help="linf step per iteration")
    p.add_argument("--l2", type=float, default=0.0, help="weight of an L2 prior keeping the image near its start")
    p.add_argument(
        "--noise-n", type=positive_int, default=1000, help="Gaussian-noise inputs for the rubbish-class rate"
    )
    p.add_argument(
        "--noise-mean", type=float, default=None, help="noise mean (default: the model's normalisation mean)"
    )
    p.add_argument("--noise-std", type=float, default=None, help="noise std (default: the model's normalisation std)")
    p.add_argument("--threshold", type=float, default=0.5, help="confidence threshold of the rubbish-class rate")
    add_run_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def fooling_figure(fool, classes, bounds) -> bytes:
    """PNG: one fooling image per class, titled with the class it was optimised for and the model's confidence."""
    from advlab.reports.figures import plt, save_png, to_numpy

    lo, hi = bounds
    k = len(fool.classes)
    cols = min(k, 10)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols + 0.4, 1.75 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(k):
        ax = axes.flat[i]
        img = to_numpy(fool.x[i]).astype("float32")
        img = img[0] if img.ndim == 3 and img.shape[0] == 1 else (img.transpose(1, 2, 0) if img.ndim == 3 else img)
        ax.imshow((img - lo) / (hi - lo), cmap="gray", vmin=0, vmax=1)
        c = int(fool.classes[i])
        name = str(classes[c]) if classes and c < len(classes) else str(c)
        ax.set_title(
            f"{name}\n{100 * float(fool.confidence[i]):.1f}%",
            fontsize=8,
            color="#111827" if bool(fool.reached[i]) else "#b91c1c",
        )
    fig.suptitle(
        f"fooling images ({fool.start} start): class the model sees and its confidence "
        f"(red: below {100 * fool.target_confidence:.3g}%)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_png(fig, None)


def run(args: argparse.Namespace) -> int:
    from advlab import io
    from advlab.dataset_level.fooling import fooling_images, rubbish_class_rate
    from advlab.provenance import provenance

    check_output_dir(args.out)
    device = resolve_device(args.device)
    model = load_cli_model(args, device=device)
    fool = fooling_images(
        model,
        start=args.start,
        confidence=args.confidence,
        steps=args.steps,
        step_size=args.step_size,
        l2=args.l2,
        generator=args.seed,
    )
    rubbish = rubbish_class_rate(
        model,
        n=args.noise_n,
        mean=args.noise_mean,
        std=args.noise_std,
        threshold=args.threshold,
        generator=args.seed + 1,
        batch_size=args.batch_size,
    )
    out = output_dir(args.out)
    record = {
        "fooling_images": fool.to_dict(),
        "rubbish_class": rubbish.to_dict(),
        "model": {"path": str(Path(args.model).resolve()), "card": model.card},
        "seed": args.seed,
        "device": str(device),
        "provenance": provenance(),
    }
    io.write_json(out / "result.json", record)
    try:
        io.write_bytes(out / "fooling.png", fooling_figure(fool, model.card.get("classes"), model.bounds))
    except ImportError:  # reports package absent in a minimal install
        log.warning("fooling.png skipped: advlab.reports is not available")
    log.info(
        "fooling images: %d/%d classes reached %.3g confidence (%s start) in %.2fs; steps %s",
        int(fool.reached.sum()),
        len(fool.classes),
        args.confidence,
        args.start,
        fool.seconds,
        fool.steps.tolist(),
    )
    log.info(
        "rubbish class: %.3f of %d noise inputs classified with confidence > %g (%s)",
        rubbish.fraction,
        rubbish.n,
        rubbish.threshold,
        rubbish.distribution,
    )
    log.info("wrote %s and %s", out / "result.json", out / "fooling.png")
    return 0
