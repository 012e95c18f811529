"""``advlab patch``: train a universal adversarial patch for a target class (Brown et al. 2017) and measure it."""

from __future__ import annotations

import argparse
import logging
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
  advlab patch --model runs/m1 --data mnist --target 3 --patch-size 10 --out runs/m1-patch
  advlab patch --model runs/m1 --data mnist --target 0 --patch-size 8 --shape circle --rotation=-20,20 --scale 0.8,1.2 --out runs/p
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "patch",
        "train a universal adversarial patch for a target class (Brown et al. 2017)",
        "Learn a patch that makes the model predict --target wherever it is pasted (random location, optional scale and "
        "rotation ranges) over the first --n-train training images, then report the success rate (fraction of held-out "
        "images, not of the target class, classified as the target with the patch at random placements) next to a random "
        "patch of the same size. Writes DIR/result.json, DIR/patch.safetensors and DIR/examples.png.",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder")
    add_data_options(p, default=None, scale_flag="--data-scale")  # --scale is the patch's
    add_model_options(p)
    p.add_argument("--target", type=int, required=True, help="the class the patch should cause")
    p.add_argument("--patch-size", type=int, default=8, help="patch side in pixels")
    p.add_argument("--shape", default="square", choices=["square", "circle"], help="patch shape")
    p.add_argument("--scale", default="1", help="scale factor or range low,high")
    p.add_argument(
        "--rotation",
        default="0",
        help="rotation in degrees or range low,high (write --rotation=-20,20 when it starts with a minus)",
    )
    p.add_argument("--epochs", type=int, default=5, help="passes over the training images")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate on the patch pixels")
    p.add_argument("--n-train", type=positive_int, default=5000, help="training images")
    p.add_argument(
        "--n",
        type=positive_int,
        default=AtMost(1000),
        help="held-out test images; default: 1000, or all when the data has fewer",
    )
    p.add_argument("--draws", type=int, default=3, help="random placements per test image")
    add_run_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def _range(text: str, name: str) -> tuple[float, float]:
    values = parse_float_list(text, name)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ValueError(f"{name}: expected a value or low,high, got {text!r}")
    return values[0], values[1]


def run(args: argparse.Namespace) -> int:
    from advlab.physical.patch import patch_success_rate, train_patch

    check_output_dir(args.out)
    device = resolve_device(args.device)
    model = load_cli_model(args, device=device)
    data_name = dataset_name(args.data, model)
    train = load_split(data_name, "train", args.data_dir, args.n_train, "--n-train", files=args)
    test = load_split(data_name, "test", args.data_dir, args.n, files=args)
    check_data_for_model(train, model)
    patch = train_patch(
        model,
        train.x,
        args.target,
        patch_size=args.patch_size,
        shape=args.shape,
        scale=_range(args.scale, "--scale"),
        rotation=_range(args.rotation, "--rotation"),
        epochs=args.epochs,
        batch_size=min(args.batch_size, 128),
        lr=args.lr,
        y=train.y,
        generator=args.seed,
    )
    rate = patch_success_rate(model, test.x, patch, y=test.y, draws=args.draws, generator=args.seed + 1)
    control = _random_patch_like(patch, model.bounds, args.seed + 2)
    base = patch_success_rate(model, test.x, control, y=test.y, draws=args.draws, generator=args.seed + 1)
    out = output_dir(args.out)
    record = _record(args, patch, rate, base, model, data_name, train, test, device)
    written = _write(out, record, patch, model, test, args.seed + 3, device)
    log.info(
        "patch %dx%d for class %d: success rate %.3f on held-out images (random patch %.3f), trained in %.1fs",
        args.patch_size,
        args.patch_size,
        args.target,
        rate,
        base,
        patch.seconds,
    )
    log.info("wrote %s", ", ".join(map(str, written)))
    return 0


def _random_patch_like(patch, bounds: tuple[float, float], seed: int):
    """The control: a uniformly random patch of the same size, shape and placement ranges."""
    import torch

    from advlab.physical.patch import AdversarialPatch

    lo, hi = bounds
    pixels = lo + (hi - lo) * torch.rand(patch.patch.shape, generator=torch.Generator().manual_seed(seed))
    return AdversarialPatch(pixels, patch.mask, patch.target, patch.scale, patch.rotation)


def _record(
    args: argparse.Namespace, patch, rate: float, base: float, model, data_name: str, train, test, device
) -> dict:
    from advlab.provenance import provenance

    return {
        "target": args.target,
        "patch_size": args.patch_size,
        "shape": args.shape,
        "scale": list(patch.scale),
        "rotation": list(patch.rotation),
        "epochs": args.epochs,
        "lr": args.lr,
        "success_rate_test": rate,
        "random_patch_success_rate_test": base,
        "success_rate_train": patch.success_rate_train,
        "success_rate_definition": "fraction of (test image not of the target class, random placement) pairs classified as the target",
        "history_mean_target_probability": patch.history,
        "train_seconds": patch.seconds,
        "draws": args.draws,
        "data": {"name": data_name, "n_train": len(train.y), "n_test": len(test.y)},
        "model": {"path": str(Path(args.model).resolve()), "card": model.card},
        "seed": args.seed,
        "device": str(device),
        "provenance": provenance(),
    }


def _write(out: Path, record: dict, patch, model, test, seed: int, device) -> list[Path]:
    """DIR/result.json, DIR/patch.safetensors and DIR/examples.png; the paths written."""
    from safetensors.torch import save as st_save

    from advlab import io

    io.write_json(out / "result.json", record)
    written = [out / "result.json", out / "patch.safetensors"]
    io.write_bytes(
        out / "patch.safetensors",
        st_save({"patch": patch.patch.cpu().contiguous(), "mask": patch.mask.cpu().contiguous()}),
    )
    try:
        io.write_bytes(out / "examples.png", _examples_png(patch, model, test, seed, device))
        written.append(out / "examples.png")
    except ImportError:  # reports package absent in a minimal install
        log.warning("examples.png skipped: advlab.reports is not available")
    return written


def _examples_png(patch, model, test, seed: int, device) -> bytes:
    """The patch pasted into the first 8 test images (placements from ``seed``), with the model's predictions."""
    import torch

    from advlab.reports.figures import example_grid

    x = test.x[:8].to(device)
    xp = patch.apply(x, seed)
    with torch.no_grad():
        pc, pp = model(x).argmax(1).cpu(), model(xp).argmax(1).cpu()
    return example_grid(x.cpu(), xp.cpu(), test.y[:8], pc, pp, test.classes, None)
