"""``advlab physical``: destruction rates of FGSM/BIM/ILLC (optionally EOT) under a simulated print-and-photograph pipeline."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from advlab.cli._common import (
    AtMost,
    add_command,
    add_data_options,
    add_model_options,
    add_run_options,
    check_data_for_model,
    check_output_dir,
    dataset_name,
    load_cli_model,
    load_split,
    output_dir,
    parse_float_list,
    positive_int,
    resolve_device,
)

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
        sub,
        "physical",
        "destruction rates under a simulated print-and-photograph pipeline (Kurakin et al. 2016)",
        "Craft adversarial examples on the first N test images with each attack and eps, pass them through a random "
        "transformation pipeline standing in for printing and photographing, and report the destruction rate "
        "(Kurakin et al. 2016, eq. 1: among images correct when clean and wrong when attacked, the fraction "
        "classified correctly again after the transformation). With --eot K the attacks are also run against the "
        "expectation over K transformations (Athalye et al. 2018). Writes DIR/result.json, DIR/table.md and "
        "DIR/examples.png (clean, adversarial and transformed adversarial images of the first attack at the largest eps).",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder (with card.json and model.safetensors)")
    add_data_options(p, default=None)
    add_model_options(p)
    p.add_argument(
        "--attacks", default="fgsm,bim,illc", help="comma-separated attack names (illc = least-likely class)"
    )
    p.add_argument("--eps", required=True, help="comma-separated eps values (fractions like 8/255 allowed)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"], help="threat-model norm")
    p.add_argument("--transform", default="print-photo", help="transformation spec (see examples) or 'print-photo'")
    p.add_argument(
        "--eot", type=int, default=0, help="also attack the EOT average over this many transformations (0: plain only)"
    )
    p.add_argument(
        "--eot-jpeg",
        default="dct",
        choices=["dct", "pillow"],
        help="JPEG inside EOT: DCT approximation or real Pillow (straight-through)",
    )
    p.add_argument(
        "--draws", type=int, default=1, help="random transformations per adversarial image (rates are averaged)"
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=AtMost(500),
        help="number of test examples (the first N); default: 500, or all when the data has fewer",
    )
    add_run_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


EXAMPLES_SHOWN = 8
"""Test images drawn in examples.png."""


def photo_examples(model, x, y, transform, attack: str, eps: float, norm: str, *, seed: int = 0, classes=None) -> bytes:
    """PNG: clean images, their adversarial versions (one attack, one eps) and those after one random transformation.

    Each panel is titled with the model's prediction, so the figure shows destruction directly: an adversarial
    image whose prediction returns to the true label after the transformation has been "destroyed".
    """
    import torch

    from advlab.attacks import attack_in_batches, make_attack
    from advlab.goals import LeastLikely, Targeted
    from advlab.reports.figures import plt, save_png, to_numpy
    from advlab.threat import ThreatModel

    x, y = x.to(model.device), y.to(model.device)
    with torch.no_grad():
        logits = model(x)
    goal = None
    cfg = make_attack(attack, norm=norm)
    if isinstance(cfg.goal, LeastLikely):  # as measure_destruction: the least-likely class of the clean model
        ll = logits.argmin(1)
        cfg, goal = cfg.replace(goal=None), Targeted(torch.where(ll == y, (y + 1) % logits.shape[1], ll))
    x_adv = torch.as_tensor(
        attack_in_batches(cfg, model, x, y, ThreatModel(norm, eps, model.bounds), goal=goal, seed=seed).x_adv
    ).to(x.device)
    with torch.no_grad():
        x_tf = transform(x_adv, torch.Generator().manual_seed(seed))
        preds = [logits.argmax(1), model(x_adv).argmax(1), model(x_tf).argmax(1)]
    rows = [("clean", x), (f"{attack} eps={eps:g}", x_adv), ("adversarial after\nprint-and-photograph", x_tf)]
    lo, hi = model.bounds
    n = x.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.25 * n + 0.8, 5.2), squeeze=False)
    name = (lambda c: str(classes[c])) if classes else str
    for r, ((label, imgs), pred) in enumerate(zip(rows, preds)):
        for i in range(n):
            ax = axes[r][i]
            img = to_numpy(imgs[i]).astype("float32")
            img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            ax.imshow((img - lo) / (hi - lo), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ok = int(pred[i]) == int(y[i])
            ax.set_title(
                ("true " + name(int(y[i])) + "\n" if r == 0 else "") + "pred " + name(int(pred[i])),
                fontsize=8,
                color="#111827" if ok else "#b91c1c",
            )
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(
        "red: misclassified. An adversarial image back to its true label after the transformation is destroyed",
        fontsize=8,
        y=0.02,
        va="bottom",
        color="#4b5563",
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1), h_pad=1.2)
    return save_png(fig, None)


def run(args: argparse.Namespace) -> int:
    from advlab.physical import measure_destruction

    check_output_dir(args.out)
    device = resolve_device(args.device)
    model = load_cli_model(args, device=device)
    data_name = dataset_name(args.data, model)
    eps, attacks, transform = _settings(args, model)
    data = load_split(data_name, "test", args.data_dir, args.n, files=args)
    check_data_for_model(data, model)
    samples = [0] + ([args.eot] if args.eot > 0 else [])
    log.info(
        "physical: %d %s images, attacks %s, eps %s, transform %s, EOT %s",
        len(data.y),
        data_name,
        attacks,
        eps,
        transform.spec(),
        args.eot or "off",
    )
    t0 = time.perf_counter()
    report = measure_destruction(
        model,
        data.x,
        data.y,
        transform,
        attacks=attacks,
        eps=eps,
        norm=args.norm,
        eot_samples=samples,
        draws=args.draws,
        seed=args.seed,
        batch_size=args.batch_size,
        eot_jpeg=args.eot_jpeg,
    )
    seconds = time.perf_counter() - t0
    written = _write(args, report, model, data, data_name, transform, eps, attacks, seconds, device)
    for line in report.table().splitlines():
        log.info("%s", line)
    log.info("wrote %s (%.1fs)", ", ".join(map(str, written)), seconds)
    return 0


def _settings(args: argparse.Namespace, model):
    """The eps values, the attack names and the transformation, checked before any work."""
    from advlab.physical import parse_transform

    eps = parse_float_list(args.eps, "--eps")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if not attacks:
        raise ValueError("--attacks: expected at least one attack name, e.g. fgsm,bim,illc")
    if args.eot < 0:
        raise ValueError(f"--eot: expected a number of samples >= 0, got {args.eot}")
    return eps, attacks, parse_transform(args.transform, bounds=model.bounds)


def _write(
    args: argparse.Namespace, report, model, data, data_name: str, transform, eps, attacks, seconds: float, device
) -> list[Path]:
    """DIR/result.json, DIR/table.md and DIR/examples.png (the first attack at the largest eps); the paths written."""
    from advlab import io
    from advlab.provenance import provenance

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
    written = [out / "result.json", out / "table.md"]
    try:
        png = photo_examples(
            model,
            data.x[:EXAMPLES_SHOWN],
            data.y[:EXAMPLES_SHOWN],
            transform,
            attacks[0],
            max(eps),
            args.norm,
            seed=args.seed,
            classes=data.classes,
        )
        io.write_bytes(out / "examples.png", png)
        written.append(out / "examples.png")
    except ImportError:  # reports package absent in a minimal install
        log.warning("examples.png skipped: advlab.reports is not available")
    return written
