"""``advlab attack``: run one attack on a saved model and write result.json and examples.png."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from advlab.cli._common import (
    add_command,
    add_data_options,
    add_run_options,
    check_data_for_model,
    check_output_dir,
    load_split,
    output_dir,
    positive_int,
    resolve_device,
    show_progress,
)
from advlab.cli.train import parse_settings

log = logging.getLogger("advlab")

EXAMPLES_SHOWN = 8
"""Examples drawn in examples.png (the first ones; the numbers in result.json cover all --n)."""

EXAMPLES = """\
  advlab attack --model runs/m1 --data mnist --attack pgd --eps 0.3 --norm linf --n 1000 --out runs/m1-pgd
  advlab attack --model runs/m1 --data mnist --attack pgd --eps 0.3 --steps 40 --restarts 10 --out runs/pgd10
  advlab attack --model runs/m1 --data mnist --attack fgsm --eps 2.0 --norm l2 --targeted --out runs/fgm-t
  advlab attack --model runs/m1 --data mnist --attack bim --eps 0.1 --least-likely --out runs/illc
  advlab attack --model runs/m1 --data mnist --attack mifgsm --eps 0.2 --set decay=0.5 --out runs/mi

List attacks with 'advlab attacks'. Settings an attack does not have are refused.
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "attack",
        "attack a saved model and report robust accuracy",
        "Run one attack on the first N test images of a dataset against a saved model (a folder written by "
        "'advlab train'), then write DIR/result.json (clean and robust accuracy, success rate, perturbation norms, "
        "confidence, wall time, settings, versions) and DIR/examples.png (originals, perturbations, adversarial "
        "examples with predicted labels).",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder (with card.json and model.safetensors)")
    add_data_options(p, default=None)
    p.add_argument("--attack", default="pgd", help="attack name (see 'advlab attacks')")
    p.add_argument("--eps", required=True, help="perturbation budget in raw input units (fractions like 8/255 allowed)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1", "l0"], help="threat-model norm")
    p.add_argument("--n", type=positive_int, default=1000, help="number of test examples (the first N)")
    p.add_argument("--steps", type=int, default=None, help="iterations (attack default when omitted)")
    p.add_argument("--step-size", type=float, default=None, help="step size (attack default when omitted)")
    p.add_argument("--restarts", type=int, default=None, help="random restarts (attack default when omitted)")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument(
        "--targeted", action="store_true", help="targeted: a random target class != true label per example"
    )
    goal.add_argument(
        "--target", type=int, default=None, help="targeted toward this class (examples of that class are skipped)"
    )
    goal.add_argument("--least-likely", action="store_true", help="target the least-likely class (ILLC)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any other attack setting (repeatable)"
    )
    add_run_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def make_goal(args: argparse.Namespace, y: torch.Tensor, num_classes: int, generator: torch.Generator):
    """The goal from --targeted / --target / --least-likely, and the index of the examples it keeps."""
    from advlab.goals import LeastLikely, Targeted

    keep = torch.arange(y.shape[0])
    if args.least_likely:
        return LeastLikely(), keep
    if args.target is not None:
        if not 0 <= args.target < num_classes:
            raise ValueError(f"--target: expected a class in 0..{num_classes - 1}, got {args.target}")
        keep = (y != args.target).nonzero().flatten()
        return Targeted(torch.full((keep.numel(),), args.target, dtype=torch.long)), keep
    if args.targeted:
        shift = torch.randint(1, num_classes, y.shape, generator=generator)
        return Targeted((y + shift) % num_classes), keep
    return None, keep


def summarize(
    result: Any, x: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor, targeted: bool
) -> dict[str, Any]:
    """Numbers for result.json, computed from the attack result (all floats)."""
    from advlab.threat import norm_of

    pred_clean = clean_logits.argmax(1)
    adv_logits = result.logits
    pred_adv = adv_logits.argmax(1)
    success = torch.as_tensor(result.success).cpu()
    correct = (pred_clean == y).cpu()
    robust = correct & (pred_adv.cpu() == y.cpu())
    delta = torch.as_tensor(result.x_adv) - x
    linf, l2 = norm_of(delta, "linf").cpu(), norm_of(delta, "l2").cpu()
    changed = success & (correct if not targeted else torch.ones_like(success))
    conf = torch.softmax(adv_logits.float(), 1).amax(1).cpu()

    def stats(v: torch.Tensor) -> dict[str, float | None]:
        if v.numel() == 0:
            return {"mean": None, "median": None, "max": None}
        return {"mean": float(v.mean()), "median": float(v.median()), "max": float(v.max())}

    return {
        "n": int(y.shape[0]),
        "clean_accuracy": float(correct.double().mean()),
        "robust_accuracy": float(robust.double().mean()),
        "attack_success_rate": float(success[correct].double().mean())
        if (not targeted and correct.any())
        else float(success.double().mean()),
        "attack_success_rate_definition": (
            "fraction of target classes reached, over all examples"
            if targeted
            else "fraction of clean-correct examples that the attack misclassifies"
        ),
        "perturbation": {
            "linf_successful": stats(linf[changed]),
            "l2_successful": stats(l2[changed]),
            "linf_all": stats(linf),
            "l2_all": stats(l2),
        },
        "mean_confidence_adversarial": float(conf[changed].mean()) if changed.any() else None,
    }


def run(args: argparse.Namespace) -> int:
    from advlab import io
    from advlab.attacks import attack_in_batches, get_attack
    from advlab.cli._common import parse_float_list
    from advlab.provenance import provenance
    from advlab.threat import ThreatModel
    from advlab.zoo import load_model

    check_output_dir(args.out)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    card = model.card
    data_name = args.data or card.get("dataset")
    if not data_name:
        raise ValueError("--data: the model card names no dataset; pass --data")
    eps_values = parse_float_list(args.eps, "--eps")
    if len(eps_values) != 1:
        raise ValueError(f"--eps: 'advlab attack' takes one eps, got {eps_values}; use 'advlab evaluate' for a sweep")
    threat = ThreatModel(args.norm, eps_values[0], tuple(model.bounds))
    cls = get_attack(args.attack)
    if threat.norm not in cls.norms:
        raise ValueError(f"--norm: attack {args.attack!r} supports {list(cls.norms)}, not {threat.norm!r}")
    options = parse_settings(args.set)
    for key in ("steps", "step_size", "restarts"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    attack = cls.from_options(options)
    data = load_split(data_name, "test", args.data_dir, args.n)
    check_data_for_model(data, model)
    x, y = data.x.to(device), data.y.to(device)
    gen = torch.Generator().manual_seed(args.seed)
    goal, keep = make_goal(args, y.cpu(), data.num_classes, gen)
    if goal is not None and goal.targeted and not cls.supports_targeted and args.attack != "illc":
        raise ValueError(f"--targeted: attack {args.attack!r} is untargeted only")
    x, y = x[keep.to(device)], y[keep.to(device)]
    with torch.no_grad():
        model.eval()
        clean_logits = torch.cat([model(x[i : i + args.batch_size]) for i in range(0, len(x), args.batch_size)])
    log.info("attacking %d %s images with %s (%s) on %s", len(x), data_name, args.attack, threat.describe(), device)
    bar = None
    if show_progress(args):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(x), desc=args.attack, unit="img")
    t0 = time.perf_counter()
    result = attack_in_batches(
        attack,
        model,
        x,
        y,
        threat,
        goal=goal,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=(lambda done: bar.update(done - bar.n)) if bar is not None else None,
    )
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    targeted = bool(goal is not None and goal.targeted)
    summary = summarize(result, x, y, clean_logits, targeted)
    out = output_dir(args.out)
    record = {
        **summary,
        "wall_seconds": seconds,
        "attack": {"name": cls.name, "paper": cls.paper, "settings": attack.settings()},
        "threat": {"norm": threat.norm, "eps": threat.eps, "bounds": list(threat.bounds)},
        "goal": "untargeted" if goal is None else goal.name,
        "data": {"name": data_name, "split": "test", "n": len(x)},
        "model": {"path": str(Path(args.model).resolve()), "card": card},
        "seed": args.seed,
        "device": str(device),
        "provenance": provenance(),
    }
    io.write_json(out / "result.json", record)
    written = [out / "result.json"]
    try:
        from advlab.reports.figures import example_grid

        k = min(len(x), EXAMPLES_SHOWN)  # a readable strip: the first k examples, not all N
        pred_adv = result.logits.argmax(1)
        io.write_bytes(
            out / "examples.png",
            example_grid(
                x[:k].cpu(),
                torch.as_tensor(result.x_adv)[:k].cpu(),
                y[:k].cpu(),
                clean_logits.argmax(1)[:k].cpu(),
                pred_adv[:k].cpu(),
                data.classes,
                None,
                bounds=tuple(model.bounds),
            ),
        )
        written.append(out / "examples.png")
    except ImportError:  # reports package absent in a minimal install
        log.warning("examples.png skipped: advlab.reports is not available")
    log.info(
        "clean accuracy %.2f%%  robust accuracy %.2f%%  success rate %.2f%%  (%.1fs)",
        100 * summary["clean_accuracy"],
        100 * summary["robust_accuracy"],
        100 * summary["attack_success_rate"],
        seconds,
    )
    log.info("wrote %s", " and ".join(map(str, written)))
    return 0
