"""``advlab evaluate``: robust accuracy of a saved model under an attack cascade, over an eps sweep, as JSON + HTML."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

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
    command_line,
    dataset_name,
    load_cli_model,
    load_split,
    output_dir,
    parse_float_list,
    positive_int,
    resolve_batch_size,
    resolve_device,
    show_progress,
    speed_record,
    start_local_processes,
    worker_output,
)
from advlab.cli._remote import add_remote_options, open_remote

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab evaluate --model runs/m1 --data mnist --eps 0.1,0.2,0.3 --norm linf --n 1000 --preset standard --out runs/m1-eval
  advlab evaluate --model runs/m1 --data mnist --eps 0.3 --preset fast --n 200 --out runs/quick
  advlab evaluate --model runs/m1 --data mnist --eps 0.3 --attacks pgd,apgd-ce,square --out runs/custom
  advlab evaluate --model runs/c10 --data cifar10 --eps 2/255,4/255,8/255 --out runs/c10-eval
  advlab evaluate --model runs/c10 --data cifar10 --eps 8/255 --device cuda --precision bf16 --channels-last \
      --batch-size auto --out runs/c10-bf16   # attacks in bf16; every prediction the report counts in fp32
  advlab evaluate --model runs/m1 --data mnist --eps 0.3 --out runs/m1-eval   # run again: resumes
  advlab evaluate --nproc 2 --model runs/m1 --data mnist --eps 0.3 --out runs/m1-eval2   # two local processes
  torchrun --nproc-per-node 8 -m advlab evaluate --device cuda --model runs/c10 --data cifar10 --eps 8/255 \\
      --num-examples 10000 --out runs/c10-eval   # 8 GPUs, one report
  advlab evaluate --target http://127.0.0.1:8501 --protocol tfserving --model-name mnist --data mnist \\
      --eps 0.1 --attacks square --budget 500000 --out runs/tfs-eval   # a model behind TF-Serving

Presets: fast (PGD-40: a first look, often optimistic; '--attacks apgd-ce' takes about 3x as long and is
stronger); standard (AutoAttack at about a tenth of its passes: APGD-CE on every example, then APGD-T, 3
targets, on the 20% closest to breaking and on the next 20% while a share gives 10% breaks, APGD-T from a
second random start on the closest 5%, and Square with 5000 queries on the closest 15%, going past 1000 queries
only where those broke something); strong (APGD-CE, APGD-T with
9 targets, FMN, Square and C&W for the norm, each with 5 restarts, on every example). '--attacks' takes a list
such as 'apgd-ce,apgd-t@0.2,square@0.15': NAME@F runs NAME on the share F of the examples still robust that
the earlier stages brought closest to breaking. The run is checkpointed in DIR/checkpoint and
resumes when started again with the same settings (--overwrite starts over after a change).
A --target URL has no gradients: give it attacks that need none ('advlab attacks' shows which; a cascade with
a gradient attack is refused before any query, naming them); each example they send counts against --budget.
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "evaluate",
        "robust accuracy under an attack cascade (eps sweep, masking checks, HTML report)",
        "Evaluate a model (a model folder, a model file or a factory: see --model) or a served model (--target URL) "
        "on the first N test examples: for each eps, "
        "every attack runs on the examples still robust, each example keeps its worst case, and gradient-masking "
        "checks run at the end. Writes DIR/report.json and a self-contained DIR/report.html.",
        EXAMPLES,
    )
    p.add_argument("--model", default=None, help="model folder (with card.json and model.safetensors)")
    p.add_argument("--target", default=None, help="instead of --model: the http(s):// URL of a served model")
    add_data_options(p, default=None)
    add_model_options(p)
    p.add_argument(
        "--eps", required=True, help="comma-separated radii in raw input units (fractions like 8/255 allowed)"
    )
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"], help="threat-model norm")
    p.add_argument(
        "--n",
        "--num-examples",
        dest="n",
        type=positive_int,
        default=AtMost(1000),
        help="number of test examples (the first N); default: 1000, or all when the data has fewer. Under torchrun "
        "write --num-examples (torchrun's own parser takes --n for one of its options)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--preset", default="standard", choices=["fast", "standard", "strong"], help="attack cascade preset"
    )
    group.add_argument(
        "--attacks", default=None, help="custom cascade: comma-separated attack names, e.g. pgd,apgd-ce,square"
    )
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.add_argument(
        "--eot-samples", type=positive_int, default=None, help="logit draws averaged for random models (None: 10)"
    )
    p.add_argument("--overwrite", action="store_true", help="discard a checkpoint of a different configuration")
    p.add_argument("--budget", type=positive_int, default=None, help="--target: most queries it may be sent")
    add_run_options(p, auto_batch_size=True)
    add_speed_options(p)
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=None,
        help="share the examples out between N local processes (what torchrun --nproc-per-node N does); one "
        "report, the same as one process writes",
    )
    add_remote_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab import distributed

    check_output_dir(args.out)  # before the model and data are loaded
    device = resolve_device(args.device)
    parse_float_list(args.eps, "--eps")
    if args.nproc is not None and args.nproc > 1:
        if args.target:
            raise ValueError("--nproc: a --target is evaluated by the server; several local processes would only "
                             "share its query budget out. Drop --nproc")  # fmt: skip
        return start_local_processes(worker, args, device, "advlab evaluate")
    try:
        with distributed.process_group(device) as world:
            return evaluate_in_group(args, distributed.device_for(device) if world.distributed else device)
    except distributed.DistributedError as exc:
        log.error("advlab evaluate: %s", exc)
        return 1


def worker(args: argparse.Namespace) -> int:
    """One process of ``--nproc``: log like the command line (rank 0 only), then evaluate its share."""
    from advlab import distributed

    with worker_output(args):
        return evaluate_in_group(args, distributed.device_for(resolve_device(args.device)))


def evaluate_in_group(args: argparse.Namespace, device: Any) -> int:
    """Evaluate in one process, or as one rank of several: each attacks its share, rank 0 writes the report."""
    from advlab import distributed
    from advlab.evaluation import evaluate
    from advlab.oracles import BudgetExceeded
    from advlab.reports import write_report

    world = distributed.world()
    if not world.is_main:
        logging.getLogger("advlab").setLevel(logging.WARNING)
    distributed.check_same(command_line(args), what="command lines")
    eps = parse_float_list(args.eps, "--eps")
    attacks = args.attacks.split(",") if args.attacks else args.preset
    model, data, data_name = _load_target(args) if _check_model_or_target(args) else _load(args, device)
    batch_size = _batch_size(args, model, data, eps, attacks)
    out = output_dir(args.out)
    log.info(
        "evaluating %s on %d %s examples (%s, eps %s) on %s%s",
        args.target or args.model,
        len(data.y),
        data_name,
        args.norm,
        ",".join(f"{e:g}" for e in eps),
        "the server" if args.target else device,
        f" in {world.size} processes" if world.distributed else "",
    )
    try:
        report = evaluate(
            model,
            data,
            eps,
            norm=args.norm,
            attacks=attacks,
            batch_size=batch_size,
            seed=args.seed,
            checkpoint_dir=out / "checkpoint",
            overwrite=args.overwrite,
            progress=show_progress(args),
            checks=not args.no_checks,
            eot_samples=args.eot_samples,
        )
    except BudgetExceeded as exc:
        raise ValueError(
            f"--budget: the target's query budget ran out ({exc}). The stages done are kept in {out / 'checkpoint'}: "
            "run the same command with a larger --budget to continue."
        ) from exc
    if not world.is_main:
        return 0
    _record(report, args, model, data, data_name, batch_size)
    json_path, html_path = write_report(report, out)
    log.info("%s", report.headline())
    if report.passes is not None:
        log.info("cost: %s in %.1f s", report.passes.summary(), report.wall_time_s)
    _sum_up_failed_checks(report)
    log.info("wrote %s and %s", json_path, html_path)
    return 0


def _record(report: Any, args: argparse.Namespace, model: Any, data: Any, data_name: str, batch_size: int) -> None:
    """What the command adds to the report's settings: the data, the model or target, and for a model the speed
    options (precision, channels-last, compilation, batch size), also in the provenance."""
    split = "" if getattr(data, "single_split", False) else f"{data.split}, "  # a data file may hold one split
    report.settings["data"] = f"{data_name} ({split}first {len(data.y)})"
    if args.target:
        report.settings["target"] = model.describe()
        report.settings["target_queries"] = model.queries
        log.info("%d queries sent to %s", model.queries, args.target)
        return
    report.settings["model_path"] = str(Path(args.model).resolve())
    speed = speed_record(model, args, batch_size)
    report.settings.update(speed)
    report.provenance["speed"] = speed


def _check_model_or_target(args: argparse.Namespace) -> bool:
    """Exactly one of ``--model`` and ``--target``; ``True`` for a target. The remote options need a target."""
    if (args.model is None) == (args.target is None):
        raise ValueError(
            "--model or --target: give one, a model folder (--model runs/m1) or the URL of a served model "
            "(--target http://127.0.0.1:8501 --protocol tfserving --model-name NAME)"
        )
    if args.model is not None and (args.protocol != "advlab" or args.model_name or args.budget is not None):
        raise ValueError("--protocol, --model-name and --budget describe a --target URL; a --model folder needs none")
    if args.target is not None and (args.precision != "fp32" or args.channels_last or args.compile):
        raise ValueError(
            "--precision, --channels-last and --compile: they set how a --model's forward passes run; a --target "
            "URL runs on its server"
        )
    return args.target is not None


def _load_target(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The oracle of ``--target`` (no query spent) and the first ``--n`` test examples of ``--data``."""
    from advlab.oracles import as_module

    if not args.data:
        raise ValueError("--data: a --target has no model card naming its dataset; pass --data (e.g. --data mnist)")
    data = load_split(args.data, "test", args.data_dir, args.n)
    oracle = open_remote(args, mode=None, budget=args.budget)
    check_data_for_model(data, as_module(oracle))
    return oracle, data, args.data


def _load(args: argparse.Namespace, device: Any) -> tuple[Any, Any, str]:
    """The saved model and the first ``--n`` test examples of ``--data`` (default: the model card's dataset)."""
    model = load_cli_model(args, device=device)
    apply_speed_options(model, args, device)
    data_name = dataset_name(args.data, model)
    data = load_split(data_name, "test", args.data_dir, args.n, files=args)
    check_data_for_model(data, model)
    return model, data, data_name


def _batch_size(args: argparse.Namespace, model: Any, data: Any, eps: list[float], attacks: Any) -> int:
    """``--batch-size`` as a number: ``auto`` probes every attack of the cascade at the largest eps."""
    if args.batch_size != "auto":
        return int(args.batch_size)
    from advlab.devices import CPU_BATCH_SIZE
    from advlab.evaluation.presets import resolve_attacks
    from advlab.threat import ThreatModel

    if args.target is not None:  # a probe would spend the server's queries, and its memory is not ours to probe
        log.info("batch size auto: %d for a --target (no memory probe on a server)", CPU_BATCH_SIZE)
        return CPU_BATCH_SIZE
    configs = [entry.config for entry in resolve_attacks(attacks, args.norm)[1]]
    return resolve_batch_size(args, configs, model, data.x, data.y, ThreatModel(args.norm, max(eps), None))


def _sum_up_failed_checks(report: Any) -> None:
    """One line under the headline counting the failed checks (each was shown in full, as evaluate's warning)."""
    if report.failed_checks:
        n = len(report.failed_checks)
        log.warning(
            "%d gradient-masking check%s failed: this robust accuracy may be overstated (see the report's Checks)",
            n,
            "" if n == 1 else "s",
        )
