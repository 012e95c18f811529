"""``advlab universal``: a universal adversarial perturbation (Moosavi-Dezfooli et al. 2017), its fooling rate and transfer."""

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
  advlab universal --model runs/m1 --data mnist --eps 0.3 --n-train 2000 --out runs/m1-uap
  advlab universal --model runs/m1 --data mnist --eps 0.3 --transfer runs/m2,runs/m3 --out runs/m1-uap
  advlab universal --model runs/m1 --data mnist --norm l2 --eps 4 --target-fooling-rate 0.9 --max-passes 5 --out runs/uap-l2
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "universal",
        "a universal adversarial perturbation and its fooling rate (Moosavi-Dezfooli et al. 2017)",
        "Compute one image-agnostic perturbation on the first --n-train training images with the paper's Algorithm 1 "
        "(DeepFool on points not yet fooled, projection onto the eps-ball, until the target fooling rate or --max-passes), "
        "then report the fooling rate (fraction of predictions that change) on the first --n test images, for the model "
        "and for each --transfer model, next to random noise of the same norm. Writes DIR/result.json, "
        "DIR/perturbation.safetensors and DIR/examples.png (the same perturbation added to the first 8 test images).",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder")
    add_data_options(p, default=None)
    add_model_options(p)
    p.add_argument("--eps", required=True, help="radius of the perturbation")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="norm of the perturbation")
    p.add_argument("--n-train", type=positive_int, default=1000, help="training images the perturbation is computed on")
    p.add_argument(
        "--n",
        type=positive_int,
        default=AtMost(1000),
        help="held-out test images for the fooling rate; default: 1000, or all when the data has fewer",
    )
    p.add_argument(
        "--target-fooling-rate",
        type=float,
        default=0.8,
        help="stop once this fraction of the training points is fooled (1 - delta)",
    )
    p.add_argument("--max-passes", type=int, default=10, help="maximum passes over the training points")
    p.add_argument("--transfer", default="", help="comma-separated model folders to measure transfer on")
    add_run_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab.dataset_level.universal import fooling_rate, universal_perturbation

    check_output_dir(args.out)
    device = resolve_device(args.device)
    model = load_cli_model(args, device=device)
    data_name = dataset_name(args.data, model)
    threat = _threat(args, model)
    train, test, others = _load_data(args, model, data_name, device)
    uap = universal_perturbation(
        model,
        train.x,
        threat,
        target_fooling_rate=args.target_fooling_rate,
        max_passes=args.max_passes,
        generator=args.seed,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    v = uap.perturbation
    noise = _noise_of_the_same_norm(v, threat, args.seed + 1)
    rates = {"model": fooling_rate(model, test.x, v), "random_noise_same_norm": fooling_rate(model, test.x, noise)}
    transfer = {
        path: {
            "fooling_rate": fooling_rate(other, test.x, v),
            "random_noise_same_norm": fooling_rate(other, test.x, noise),
            "arch": other.card.get("arch"),
        }
        for path, other in others.items()
    }
    out = output_dir(args.out)
    record = _record(args, uap, rates, transfer, model, data_name, train, test, device)
    written = _write(out, record, model, threat, v, test, device)
    _log_summary(threat, uap, rates, transfer, len(test.y), written)
    return 0


def _threat(args: argparse.Namespace, model):
    """The perturbation's norm ball: one --eps radius, in --norm, in the model's box."""
    from advlab.threat import ThreatModel

    eps = parse_float_list(args.eps, "--eps")
    if len(eps) != 1:
        raise ValueError(f"--eps: expected one radius, got {eps}")
    return ThreatModel(args.norm, eps[0], model.bounds)


def _load_data(args: argparse.Namespace, model, data_name: str, device):
    """The training and test images, and the --transfer models (loaded first: a bad path fails fast)."""

    train = load_split(data_name, "train", args.data_dir, args.n_train, "--n-train", files=args)
    test = load_split(data_name, "test", args.data_dir, args.n, files=args)
    check_data_for_model(train, model)
    others = {
        str(Path(path).resolve()): load_cli_model(args, path, device=device, option="--transfer", card_options=False)
        for path in [s.strip() for s in args.transfer.split(",") if s.strip()]
    }
    for other in others.values():
        check_data_for_model(test, other, "--transfer")
    return train, test, others


def _noise_of_the_same_norm(v, threat, seed: int):
    """Random noise with the perturbation's norm: random signs times eps (linf), a Gaussian direction (l2)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(v.shape, generator=g).to(v.device)
    return threat.eps * (noise.sign() if threat.norm == "linf" else noise / noise.norm())


def _record(args: argparse.Namespace, uap, rates, transfer, model, data_name: str, train, test, device) -> dict:
    from advlab.provenance import provenance

    return {
        **uap.to_dict(),
        "fooling_rate_test": rates["model"],
        "random_noise_fooling_rate_test": rates["random_noise_same_norm"],
        "fooling_rate_definition": "fraction of test images whose predicted label changes when the perturbation is added (clipped to the box)",
        "transfer": transfer,
        "target_fooling_rate": args.target_fooling_rate,
        "max_passes": args.max_passes,
        "data": {"name": data_name, "n_train": len(train.y), "n_test": len(test.y)},
        "model": {"path": str(Path(args.model).resolve()), "card": model.card},
        "seed": args.seed,
        "device": str(device),
        "provenance": provenance(),
    }


def _write(out: Path, record: dict, model, threat, v, test, device) -> list[Path]:
    """DIR/result.json, DIR/perturbation.safetensors and DIR/examples.png; the paths written."""
    from safetensors.torch import save as st_save

    from advlab import io

    io.write_json(out / "result.json", record)
    io.write_bytes(out / "perturbation.safetensors", st_save({"perturbation": v.detach().cpu().contiguous()}))
    written = [out / "result.json", out / "perturbation.safetensors"]
    try:
        io.write_bytes(out / "examples.png", _examples_png(model, threat, v, test, device))
        written.append(out / "examples.png")
    except ImportError:  # reports package absent in a minimal install
        log.warning("examples.png skipped: advlab.reports is not available")
    return written


def _examples_png(model, threat, v, test, device) -> bytes:
    """The perturbation added to the first 8 test images, with the model's predictions."""
    import torch

    from advlab.reports.figures import example_grid

    x = test.x[:8].to(device)
    x_adv = threat.project(x + v.to(device), x)
    with torch.no_grad():
        pc, pa = model(x).argmax(1).cpu(), model(x_adv).argmax(1).cpu()
    return example_grid(x.cpu(), x_adv.cpu(), test.y[:8], pc, pa, test.classes, None, bounds=tuple(model.bounds))


def _log_summary(threat, uap, rates, transfer, n_test: int, written: list[Path]) -> None:
    log.info(
        "universal perturbation (%s): fooling rate %.3f on %d test images (random noise %.3f), %d passes, %.1fs",
        threat.describe(),
        rates["model"],
        n_test,
        rates["random_noise_same_norm"],
        uap.passes,
        uap.seconds,
    )
    for path, t in transfer.items():
        log.info("  transfer to %s: %.3f (noise %.3f)", path, t["fooling_rate"], t["random_noise_same_norm"])
    log.info("wrote %s", ", ".join(map(str, written)))
