"""``advlab attack``: run one attack on a saved model and write result.json and examples.png."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from advlab import io
from advlab.attacks.base import attack_in_batches
from advlab.attacks.registry import ATTACKS, AttackConfig, make_attack
from advlab.cli._common import (
    AtMost,
    add_command,
    add_data_options,
    add_model_options,
    add_run_options,
    add_speed_options,
    apply_speed_options,
    check_data_for_model,
    check_output_dir,
    dataset_name,
    load_cli_model,
    load_split,
    option_value,
    output_dir,
    parse_float_list,
    parse_set_options,
    positive_int,
    resolve_batch_size,
    resolve_device,
    setting_type,
    show_progress,
    speed_record,
)
from advlab.data import Dataset
from advlab.devices import to_device
from advlab.goals import Goal, LeastLikely, Targeted
from advlab.models import Classifier, predict
from advlab.provenance import provenance
from advlab.result import SUCCESS_RATE_DEFINITION, AttackResult
from advlab.settings import Setting, rename_deprecated
from advlab.threat import ThreatModel, norm_of

log = logging.getLogger("advlab")

EXAMPLES_SHOWN = 8
"""Examples drawn in examples.png (the first ones; the numbers in result.json cover all --n)."""

EXAMPLES = """\
  advlab attack --model runs/m1 --data mnist --attack pgd --eps 0.3 --norm linf --n 1000 --out runs/m1-pgd
  advlab attack --model runs/m1 --data mnist --attack pgd --eps 0.3 --steps 40 --restarts 10 --out runs/pgd10
  advlab attack --model runs/m1 --data mnist --attack apgd --eps 0.3 --steps 100 --loss dlr --out runs/apgd
  advlab attack --model runs/m1 --data mnist --attack fgsm --eps 2.0 --norm l2 --targeted --out runs/fgm-t
  advlab attack --model runs/m1 --data mnist --attack illc --eps 0.1 --out runs/illc
  advlab attack --model runs/m1 --data mnist --attack mifgsm --eps 0.2 --set momentum=0.5 --out runs/mi
  advlab attack --model runs/c10 --data cifar10 --attack apgd --eps 8/255 --device cuda --precision bf16 \
      --channels-last --batch-size auto --out runs/c10-apgd   # faster on a GPU; success still checked in fp32

Every setting of the chosen attack is an option (its name with '-' for '_'), or --set KEY=VALUE. Run
'advlab attack --attack NAME --help' to see them with their defaults, or 'advlab attacks NAME'.
"""

DEFAULT_ATTACK = "pgd"
SETTING_DEST = "setting:"
"""Namespace prefix of the options derived from the attack's settings."""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "attack",
        "attack a saved model and report robust accuracy",
        "Run one attack on the first N test examples of a dataset against a model (a model folder, a model file or "
        "a factory: see --model), then write DIR/result.json (clean and robust accuracy, success rate, perturbation norms, "
        "confidence, wall time, settings, versions) and DIR/examples.png (originals, perturbations, adversarial "
        "examples with predicted labels).",
        EXAMPLES,
    )
    p.add_argument("--model", required=True, help="model folder (with card.json and model.safetensors)")
    add_data_options(p, default=None)
    add_model_options(p)
    p.add_argument("--attack", default=DEFAULT_ATTACK, help="attack or alias name (see 'advlab attacks')")
    p.add_argument("--eps", required=True, help="perturbation budget in raw input units (fractions like 8/255 allowed)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1", "l0"], help="threat-model norm")
    p.add_argument(
        "--n",
        type=positive_int,
        default=AtMost(1000),
        help="number of test examples (the first N); default: 1000, or all when the data has fewer",
    )
    goal = p.add_mutually_exclusive_group()
    goal.add_argument(
        "--targeted", action="store_true", help="targeted: a random target class != true label per example"
    )
    goal.add_argument(
        "--target", type=int, default=None, help="targeted toward this class (examples of that class are skipped)"
    )
    goal.add_argument("--least-likely", action="store_true", help="target the least-likely class (ILLC)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any setting of the attack (repeatable)"
    )
    add_run_options(p, auto_batch_size=True)
    add_speed_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)
    cast(Any, p).before_parse = add_attack_settings


def add_attack_settings(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Add the settings of the attack named on the command line as options (``--steps``, ``--rho``, ...)."""
    name = option_value(argv, "--attack", DEFAULT_ATTACK)
    try:
        config = make_attack(name, norm=option_value(argv, "--norm", "linf"))
    except (ValueError, TypeError):
        return  # an unknown name or a norm the alias lacks: run() reports it with the full message
    spec = config.spec
    group = parser.add_argument_group(f"settings of {name} ({spec.paper})")
    taken = {o for action in parser._actions for o in action.option_strings}
    for setting in spec.settings.values():
        flag = "--" + setting.name.replace("_", "-")
        if flag in taken:
            continue  # a command-level option of the same name: the setting is given with --set
        fixed = getattr(config, setting.name)
        group.add_argument(
            flag, dest=SETTING_DEST + setting.name, type=setting_type(setting), default=argparse.SUPPRESS,
            metavar=setting.type_name.upper(), help=f"{setting.describe()} (default: {fixed})",
        )  # fmt: skip
    for old, new in spec.renamed.items():
        flag = "--" + old.replace("_", "-")
        if flag not in taken:
            group.add_argument(
                flag, dest=SETTING_DEST + old, type=setting_type(spec.settings[new]), default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )  # fmt: skip
    _refuse_foreign_settings(parser, argv, name, spec.settings)


def _refuse_foreign_settings(
    parser: argparse.ArgumentParser, argv: list[str], name: str, settings: Mapping[str, Setting]
) -> None:
    """A setting of another attack given to this one gets a message naming the attack's own settings."""
    known = {o for action in parser._actions for o in action.option_strings}
    others = {s for cls in ATTACKS.values() for s in cls.spec.settings} | {
        old for cls in ATTACKS.values() for old in cls.spec.renamed
    }
    for token in argv:
        flag = token.split("=", 1)[0]
        key = flag[2:].replace("-", "_")
        if flag.startswith("--") and flag not in known and key in others:
            parser.error(
                f"{flag}: attack {name!r} has no setting {key!r}; its settings are "
                f"{', '.join('--' + s.replace('_', '-') for s in settings) or 'none'} (see 'advlab attacks {name}')"
            )


def attack_options(args: argparse.Namespace, config: AttackConfig) -> dict[str, Any]:
    """The attack's settings given on the command line: derived options, then ``--set`` pairs."""
    spec = config.spec
    options = {k[len(SETTING_DEST) :]: v for k, v in vars(args).items() if k.startswith(SETTING_DEST)}
    options.update(parse_set_options(args.set, spec.settings, f"attack {spec.name!r}", spec.renamed))
    return rename_deprecated(spec.name, options, spec.renamed)


def make_goal(args: argparse.Namespace, y: torch.Tensor, num_classes: int, generator: torch.Generator):
    """The goal from --targeted / --target / --least-likely, and the index of the examples it keeps."""
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
        "attack_success_rate": None if math.isnan(result.success_rate) else result.success_rate,
        "attack_success_rate_definition": SUCCESS_RATE_DEFINITION,
        "perturbation": {
            "linf_successful": stats(linf[changed]),
            "l2_successful": stats(l2[changed]),
            "linf_all": stats(linf),
            "l2_all": stats(l2),
        },
        "mean_confidence_adversarial": float(conf[changed].mean()) if changed.any() else None,
    }


@dataclass(frozen=True)
class _Setup:
    """What ``advlab attack`` works on once the command line is read."""

    model: Classifier
    data: Dataset
    threat: ThreatModel
    attack: AttackConfig
    device: torch.device


def run(args: argparse.Namespace) -> int:
    """``advlab attack``: set up, run the attack in batches, write result.json and examples.png."""
    setup = _set_up(args)
    x, y = to_device(setup.data.x, setup.device), to_device(setup.data.y, setup.device)
    goal, keep = make_goal(args, y.cpu(), setup.data.num_classes, torch.Generator().manual_seed(args.seed))
    x, y = x[keep.to(setup.device)], y[keep.to(setup.device)]
    setup.model.eval()
    batch_size = resolve_batch_size(args, [setup.attack], setup.model, x, y, setup.threat, goal)
    clean_logits = predict(setup.model, x, batch_size=batch_size, logits=True)
    log.info(
        "attacking %d %s examples with %s (%s) on %s", len(x), setup.data.name, args.attack, setup.threat.describe(),
        setup.device,
    )  # fmt: skip
    result, seconds = _attack(args, setup, x, y, goal, batch_size)
    summary = summarize(
        result, x, y, clean_logits, bool(goal is not None and goal.targeted) or setup.attack.goal is not None
    )
    out = output_dir(args.out)
    speed = speed_record(setup.model, args, batch_size)
    io.write_json(out / "result.json", _record(args, setup, summary, seconds, goal, len(x), speed))
    written = [out / "result.json", *_write_examples(out, setup, x, y, clean_logits, result)]
    log.info(
        "clean accuracy %.2f%%  robust accuracy %.2f%%  success rate %.2f%%  (%.1fs)",
        100 * summary["clean_accuracy"], 100 * summary["robust_accuracy"], 100 * summary["attack_success_rate"],
        seconds,
    )  # fmt: skip
    log.info("wrote %s", " and ".join(map(str, written)))
    return 0


def _set_up(args: argparse.Namespace) -> _Setup:
    """Model, data, threat model and attack config from the command line, all checked before any work."""
    check_output_dir(args.out)
    device = resolve_device(args.device)
    model = load_cli_model(args, device=device)
    apply_speed_options(model, args, device)
    data_name = dataset_name(args.data, model)
    eps_values = parse_float_list(args.eps, "--eps")
    if len(eps_values) != 1:
        raise ValueError(f"--eps: 'advlab attack' takes one eps, got {eps_values}; use 'advlab evaluate' for a sweep")
    threat = ThreatModel(args.norm, eps_values[0], (model.bounds[0], model.bounds[1]))
    config = make_attack(args.attack, norm=args.norm, argument="--attack")
    if threat.norm not in config.norms:
        raise ValueError(f"--norm: attack {args.attack!r} supports {list(config.norms)}, not {threat.norm!r}")
    config = config.replace(**attack_options(args, config))
    _check_goal(args, config)
    data = load_split(data_name, "test", args.data_dir, args.n, files=args)
    check_data_for_model(data, model)
    return _Setup(model, data, threat, config, device)


def _check_goal(args: argparse.Namespace, attack: AttackConfig) -> None:
    """The goal options agree with the attack (before any data is loaded)."""
    if not (args.least_likely or args.targeted or args.target is not None):
        return
    flag = "--least-likely" if args.least_likely else "--target" if args.target is not None else "--targeted"
    if attack.goal is not None:
        raise ValueError(f"{flag}: attack {args.attack!r} fixes its goal ({attack.goal.name}); drop {flag}")
    if not attack.supports_targeted:
        raise ValueError(f"{flag}: attack {args.attack!r} is untargeted only")


def _attack(
    args: argparse.Namespace, setup: _Setup, x: torch.Tensor, y: torch.Tensor, goal: Goal | None, batch_size: int
) -> tuple[AttackResult, float]:
    """The attack over all examples in batches, with a progress bar on a terminal; returns the wall time too."""
    bar = tqdm(total=len(x), desc=args.attack, unit="img") if show_progress(args) else None
    t0 = time.perf_counter()
    result = attack_in_batches(
        setup.attack, setup.model, x, y, setup.threat, goal=goal, batch_size=batch_size, seed=args.seed,
        progress=(lambda done: bar.update(done - bar.n)) if bar is not None else None,
    )  # fmt: skip
    if bar is not None:
        bar.close()
    return result, time.perf_counter() - t0


def _record(
    args: argparse.Namespace,
    setup: _Setup,
    summary: dict[str, Any],
    seconds: float,
    goal: Goal | None,
    n: int,
    speed: dict[str, Any],
) -> dict[str, Any]:
    """result.json: the figures, the attack with its settings, the threat model, data, model, the speed options
    (precision, channels-last, compilation, batch size) and provenance."""
    attack = setup.attack
    effective_goal = goal or attack.goal
    return {
        **summary,
        "wall_seconds": seconds,
        "attack": {"name": args.attack, "attack": attack.name, "paper": attack.paper, "settings": attack.settings()},
        "threat": {"norm": setup.threat.norm, "eps": setup.threat.eps, "bounds": list(setup.threat.box)},
        "goal": "untargeted" if effective_goal is None else effective_goal.name,
        "data": {"name": setup.data.name, "split": setup.data.split, "n": n, "source": setup.data.source},
        "model": {"path": str(Path(args.model).resolve()), "card": setup.model.card},
        "seed": args.seed,
        "device": str(setup.device),
        "speed": speed,
        "provenance": provenance(device=str(setup.device), speed=speed),
    }


def _write_examples(
    out: Path, setup: _Setup, x: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor, result: AttackResult
) -> list[Path]:
    """examples.png: the first few originals, perturbations and adversarial examples with predicted labels."""
    from advlab.reports.figures import example_grid  # matplotlib: only when a figure is drawn

    k = min(len(x), EXAMPLES_SHOWN)  # a readable strip: the first k examples, not all N
    assert result.logits is not None  # set by the attack boundary
    grid = example_grid(
        x[:k].cpu(), torch.as_tensor(result.x_adv)[:k].cpu(), y[:k].cpu(), clean_logits.argmax(1)[:k].cpu(),
        result.logits.argmax(1)[:k].cpu(), setup.data.classes, None, bounds=setup.threat.box,
    )  # fmt: skip
    return [io.write_bytes(out / "examples.png", grid)]
