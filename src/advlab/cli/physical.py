"""``advlab physical``: destruction rates of FGSM/BIM/ILLC (optionally EOT) under a simulated print-and-photograph pipeline."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from advlab.cli._common import add_command, add_data_options, add_run_options, output_dir, parse_float_list, resolve_device

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab physical --model runs/m1 --data mnist --attacks fgsm,bim,illc --eps 0.1,0.2 --out runs/m1-photo
  advlab physical --model runs/m1 --data mnist --eps 0.1,0.2 --eot 30 --draws 3 --out runs/m1-photo-eot \\
      --transform "blur=0.5..1.5,noise=0..0.05,jpeg=50..90,brightness=-0.1..0.1,contrast=0.8..1.2,rotate=-5..5,scale=0.9..1.1,perspective=0..0.05"
  advlab physical --model runs/m1 --data mnist --attacks pgd --eps 0.2 --transform jpeg=30..60 --eot 10 --out runs/jpeg

Transform items are name=low..high (a range drawn per image) or name=value; names: blur (sigma, pixels),
noise (std), jpeg (quality 1..100), brightness (delta), contrast (factor), rotate (degrees, within +-45),
scale (factor), perspective (corner shift, fraction of the size). 'print-photo' is the default pipeline.
"""


def add_parser(sub) -> None:
    p = add_command(
        sub, "physical", "destruction rates under a simulated print-and-photograph pipeline (Kurakin et al. 2016)",
        "Craft adversarial examples on the first N test images with each attack and eps, pass them through a random "
        "transformation pipeline standing in for printing and photographing, and report the destruction rate "
        "(Kurakin et al. 2016, eq. 1: among images correct when clean and wrong when attacked, the fraction "
        "classified correctly again after the transformation). With --eot K the attacks are also run against the "
        "expectation over K transformations (Athalye et al. 2018). Writes DIR/result.json and DIR/examples.png.",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder (with card.json and model.safetensors)")
    add_data_options(p, default=None)
    p.add_argument("--attacks", default="fgsm,bim,illc", help="comma-separated attack names (illc = least-likely class)")
    p.add_argument("--eps", required=True, help="comma-separated eps values (fractions like 8/255 allowed)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"], help="threat-model norm")
    p.add_argument("--transform", default="print-photo", help="transformation spec (see examples) or 'print-photo'")
    p.add_argument("--eot", type=int, default=0, help="also attack the EOT average over this many transformations (0: plain only)")
    p.add_argument("--eot-jpeg", default="dct", choices=["dct", "pillow"], help="JPEG inside EOT: DCT approximation or real Pillow (straight-through)")
    p.add_argument("--draws", type=int, default=1, help="random transformations per adversarial image (rates are averaged)")
    p.add_argument("--n", type=int, default=500, help="number of test examples (the first N)")
    add_run_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from advlab import io
    from advlab.data import load_dataset
    from advlab.physical import measure_destruction, parse_transform
    from advlab.provenance import provenance
    from advlab.zoo import load_model

    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    data_name = args.data or model.card.get("dataset")
    if not data_name:
        raise ValueError("--data: the model card names no dataset; pass --data")
    eps = parse_float_list(args.eps, "--eps")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if not attacks:
        raise ValueError("--attacks: expected at least one attack name, e.g. fgsm,bim,illc")
    if args.eot < 0:
        raise ValueError(f"--eot: expected a number of samples >= 0, got {args.eot}")
    transform = parse_transform(args.transform, bounds=model.bounds)
    data = load_dataset(data_name, split="test", data_dir=args.data_dir, n=args.n)
    samples = [0] + ([args.eot] if args.eot > 0 else [])
    log.info("physical: %d %s images, attacks %s, eps %s, transform %s, EOT %s", len(data.y), data_name, attacks, eps,
             transform.spec(), args.eot or "off")
    t0 = time.perf_counter()
    report = measure_destruction(
        model, data.x, data.y, transform, attacks=attacks, eps=eps, norm=args.norm, eot_samples=samples,
        draws=args.draws, seed=args.seed, batch_size=args.batch_size, eot_jpeg=args.eot_jpeg,
    )
    seconds = time.perf_counter() - t0
    out = output_dir(args.out)
    record = {
        **report.to_dict(),
        "wall_seconds": seconds,
        "data": {"name": data_name, "split": "test", "n": len(data.y)},
        "model": {"path": str(Path(args.model).resolve()), "card": model.card},
        "eot_jpeg": args.eot_jpeg,
        "device": str(device),
        "provenance": provenance(),
    }
    io.write_json(out / "result.json", record)
    io.write_text(out / "table.md", report.table() + "\n")
    try:
        from advlab.reports.figures import example_grid

        x = data.x[:8].to(device)
        g = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            xt = transform(x, g)
            pred_c, pred_t = model(x).argmax(1).cpu(), model(xt).argmax(1).cpu()
        io.write_bytes(out / "examples.png", example_grid(x.cpu(), xt.cpu(), data.y[:8], pred_c, pred_t, data.classes, None))
    except ImportError:  # reports package absent in a minimal install
        log.warning("examples.png skipped: advlab.reports is not available")
    for line in report.table().splitlines():
        log.info("%s", line)
    log.info("wrote %s (%.1fs)", out / "result.json", seconds)
    return 0
