"""``advlab train``: train a zoo architecture on a dataset, optionally with a defense, and save weights + card."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from advlab import distributed, validation, zoo
from advlab.cli._common import (
    add_command,
    add_data_options,
    check_output_dir,
    command_line,
    load_split,
    positive_int,
    resolve_device,
    show_progress,
    start_local_processes,
    worker_output,
)
from advlab.data import Dataset
from advlab.defenses import DEFENSES, Trainer, accuracy
from advlab.defenses.base import PRECISIONS, is_recorded
from advlab.defenses.vat import split_labelled
from advlab.models import Classifier
from advlab.settings import Setting

log = logging.getLogger("advlab")

EVAL_TRAIN_EXAMPLES = 10_000
"""The train accuracy in the card is measured on at most this many training examples."""

EXAMPLES = """\
  advlab train --data mnist --arch wong-cnn --epochs 5 --out runs/m1
  # robust MNIST in ~5 min on 2 CPU cores (99% clean, 90.6% under PGD-40 x 10 at eps 0.3)
  advlab train --data mnist --arch wong-cnn --defense pgd --epochs 12 --lr 5e-3 --schedule cyclic --batch-size 100 --set eps=0.3 --set steps=5 --set eps_rampup=0.2 --out runs/mnist-pgd
  advlab train --data mnist --arch madry-cnn --defense pgd --set eps=0.3 --set steps=40 --out runs/madry
  advlab train --data digits --arch mlp --epochs 20 --lr 0.003 --out runs/digits-mlp
  # semi-supervised, 100 labels: 1.76% test error in ~9 min on one core
  advlab train --data mnist --defense vat --labels 100 --epochs 30 --batch-size 64 --schedule cosine --set eps=2.0 --set entmin=true --out runs/vat100
  advlab train --data cifar10 --arch preact-resnet18 --optimizer sgd --lr 0.1 --schedule cyclic --out runs/c10

  # two processes (DistributedDataParallel; gloo on CPUs, NCCL with --device cuda); the global batch stays 100
  advlab train --nproc 2 --data mnist --arch wong-cnn --defense pgd --batch-size 100 --set eps=0.3 --out runs/ddp
  torchrun --nproc-per-node 4 -m advlab train --device cuda --sync-bn --precision bf16 --data cifar10 --arch preact-resnet18 --out runs/c10
  # two machines (run on each, with its --node-rank): torchrun's rendezvous; --out on rank 0's machine
  torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m advlab train ...

A killed run resumes from its last finished epoch when started again with the same command (with any number of
processes). In several processes --batch-size is the global batch: each process takes its part of every batch.
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "train",
        "train a model (optionally with a defense) and save it",
        "Train an architecture from the model zoo on a dataset, show train/test accuracy per epoch, checkpoint "
        "every epoch, and save the weights (safetensors) with a JSON model card. The output folder is then "
        "usable as --model everywhere.",
        EXAMPLES,
    )
    add_data_options(p, default="mnist")
    p.add_argument("--arch", default="wong-cnn", help="architecture from the zoo (see --list-archs)")
    p.add_argument("--defense", default="standard", help="training method (see --list-defenses)")
    p.add_argument("--epochs", type=positive_int, default=5, help="passes over the training data")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="optimiser")
    p.add_argument(
        "--schedule",
        default=None,
        choices=["constant", "cosine", "cyclic", "step"],
        help="learning-rate schedule (default: the defense's own, e.g. cyclic for fast-fgsm, else constant)",
    )
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay")
    p.add_argument("--batch-size", type=positive_int, default=128, help="training batch size")
    p.add_argument("--n-train", type=positive_int, default=None, help="use only the first N training examples")
    p.add_argument(
        "--labels",
        type=int,
        default=None,
        help="semi-supervised: keep N labels (balanced per class, seeded), the rest of the training set unlabelled",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the defense, e.g. --set eps=8/255 --set steps=40 (repeatable; see --list-defenses)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_device_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default=None, help="output folder for model.safetensors, card.json and checkpoints")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard a checkpoint of a different configuration in the output folder instead of refusing it",
    )
    p.add_argument("--list-archs", action="store_true", help="list architectures and exit")
    p.add_argument("--list-defenses", action="store_true", help="list defenses with their settings and exit")
    p.set_defaults(func=run)


def add_device_options(p: argparse.ArgumentParser) -> None:
    """Where and how the training runs: --device, --precision, --nproc, --sync-bn."""
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (several processes: one GPU each)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=list(PRECISIONS),
        help="fp32, or autocast to bf16 (CPUs too) / fp16 (with loss scaling) for the forward passes",
    )
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=None,
        help="train in N local processes with DistributedDataParallel (what torchrun --nproc-per-node N does); "
        "--batch-size stays the global batch",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="several processes on GPUs: batch-norm statistics over the global batch (SyncBatchNorm)",
    )


CLI_SETTINGS = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "optimizer": "--optimizer",
    "weight_decay": "--weight-decay",
    "schedule": "--schedule",
    "seed": "--seed",
    "precision": "--precision",
    "sync_bn": "--sync-bn",
    "device": "--device",
    "checkpoint_dir": "--out",
    "progress": "--quiet",
    "overwrite": "--overwrite",
}
"""Trainer settings that ``advlab train`` sets from its own options, never through ``--set``."""


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``["eps=0.3", "norm=linf"]`` -> ``{"eps": 0.3, "norm": "linf"}`` (values read as JSON when they parse).

    The untyped reading used by commands whose settings are not declared in one place; ``advlab train`` reads its
    ``--set`` values by the trainer's declared types (:func:`trainer_settings`).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, value = _split_pair(pair)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _split_pair(pair: str) -> tuple[str, str]:
    if "=" not in pair:
        raise ValueError(f"--set: expected KEY=VALUE, got {pair!r}")
    key, value = pair.split("=", 1)
    return key.strip().replace("-", "_"), value


def settable(trainer_cls: type[Trainer]) -> dict[str, Setting]:
    """The settings of a trainer that ``--set`` can give (those without an option of their own), its own first."""
    declared = {k: s for k, s in trainer_cls.declared_settings().items() if k not in CLI_SETTINGS}
    return dict(sorted(declared.items(), key=lambda item: not is_recorded(item[1])))


def parse_value(setting: Setting, text: str) -> Any:
    """``text`` read by the setting's declared type: numbers (``8/255``), booleans, ``none``; JSON for lists."""
    if setting.type in (int, float, bool, str):
        return setting.parse(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # e.g. one model folder for a list of static models


def trainer_settings(trainer_cls: type[Trainer], pairs: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs parsed by the trainer's declared settings; unknown keys refused with the known ones.

    Raises:
        ValueError: a malformed pair, a key the trainer does not have (or one with its own option), a value that
            cannot be read as the setting's type.
    """
    known = settable(trainer_cls)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, text = _split_pair(pair)
        name = trainer_cls.renamed.get(key, key)  # an old name still works (the trainer warns)
        if name in CLI_SETTINGS:
            raise ValueError(f"--set: {key!r} has an option of its own; use {CLI_SETTINGS[name]}")
        if name not in known:
            raise ValueError(
                f"--set: defense {trainer_cls.name!r} has no setting {key!r}; its settings are "
                f"{', '.join(map(repr, known))}." + validation.did_you_mean(key, known)
            )
        try:
            out[key] = parse_value(known[name], text)
        except ValueError as exc:
            raise ValueError(f"--set: {exc}") from exc
    return out


def describe_defenses() -> list[str]:
    """One line per defense (name and summary), then its ``--set`` settings with their defaults."""
    lines = []
    for name, cls in DEFENSES.items():
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        lines.append(f"{name:<22}{summary}")
        options = "  ".join(f"{k}={s.default}" for k, s in settable(cls).items() if is_recorded(s))
        lines.append(f"{'':<22}--set {options}" if options else f"{'':<22}(the common options only)")
    return lines


def run(args: argparse.Namespace) -> int:
    if args.list_archs:
        print("\n".join(zoo.list_archs()))
        return 0
    if args.list_defenses:
        print("\n".join(describe_defenses()))
        return 0
    if not args.out:
        raise ValueError("--out: give an output folder, e.g. --out runs/m1")
    out = check_output_dir(args.out)
    device = resolve_device(args.device)
    if args.nproc is not None and args.nproc > 1:
        return run_local_processes(args, device, out)
    try:
        with distributed.process_group(device) as world:
            return train_in_group(args, distributed.device_for(device) if world.distributed else device, out)
    except distributed.DistributedError as exc:
        log.error("advlab train: %s", exc)
        return 1


def train_in_group(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    """Train and save, in one process or as one rank of several (rank 0 evaluates and writes the model folder)."""
    world = distributed.world()
    if not world.is_main:
        logging.getLogger("advlab").setLevel(logging.WARNING)
    distributed.check_same(command_line(args), what="command lines")
    trainer = make_trainer(args, device, out)
    train, test, unlabeled = load_data(args)
    clf = zoo.build_classifier(
        args.arch, input_shape=train.input_shape, num_classes=train.num_classes, mean=train.mean, std=train.std
    ).to(device)
    log.info(
        "training %s on %s (%d examples, %s) with defense %r on %s%s",
        args.arch,
        args.data,
        len(train),
        "x".join(map(str, train.input_shape)),
        args.defense,
        device,
        f" in {world.size} processes (global batch {args.batch_size})" if world.distributed else "",
    )
    t0 = time.perf_counter()
    trainer.fit(clf, train, test, **({} if unlabeled is None else {"unlabeled": unlabeled}))
    seconds = time.perf_counter() - t0
    if not world.is_main:
        return 0
    acc = evaluate_accuracy(clf, train, test)
    path = save(args, clf, trainer, train, acc, seconds=seconds, device=device, out=out)
    log.info("test accuracy %.2f%%  (train %.2f%%)  in %.1fs", 100 * acc["test"], 100 * acc["train"], seconds)
    log.info("saved %s", path)
    return 0


def run_local_processes(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    """``--nproc N``: the same command in N local processes started by torch's elastic agent (as torchrun does)."""
    if args.sync_bn and device.type != "cuda":
        raise ValueError(
            "--sync-bn: PyTorch's SyncBatchNorm synchronises batch statistics on GPUs only; drop --sync-bn on CPUs "
            "(each process then normalises with its part of the batch) or add --device cuda"
        )
    make_trainer(args, device, out)  # a bad setting is refused here, once, rather than in every process
    return start_local_processes(worker, args, device, "advlab train")


def worker(args: argparse.Namespace) -> int:
    """One process of ``--nproc``: log like the command line (rank 0 only), then train as one rank."""
    with worker_output(args):
        device = distributed.device_for(resolve_device(args.device))
        return train_in_group(args, device, check_output_dir(args.out))


def make_trainer(args: argparse.Namespace, device: torch.device, out: Path) -> Trainer:
    """The trainer of ``--defense`` with the common options and the ``--set`` settings."""
    trainer_cls = DEFENSES.get(args.defense)
    settings = trainer_settings(trainer_cls, args.set)
    return trainer_cls(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        seed=args.seed,
        precision=args.precision,
        sync_bn=args.sync_bn,
        device=device,
        checkpoint_dir=out / "checkpoint",
        progress=show_progress(args),
        overwrite=args.overwrite,
        **({} if args.schedule is None else {"schedule": args.schedule}),
        **settings,
    )


def load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset, torch.Tensor | None]:
    """The training and test sets; with ``--labels``, the training set keeps that many labels, the rest unlabelled."""
    train = load_split(args.data, "train", args.data_dir, args.n_train, "--n-train", files=args)
    test = load_split(args.data, "test", args.data_dir, None, files=args)
    if args.labels is None:
        return train, test, None
    labelled, rest = split_labelled(train.y, args.labels, train.num_classes, seed=args.seed)
    kept = type(train)(
        train.x[labelled],
        train.y[labelled],
        name=train.name,
        split=train.split,
        classes=train.classes,
        mean=train.mean,
        std=train.std,
    )
    return kept, test, train.x[rest]


def evaluate_accuracy(clf: Classifier, train: Dataset, test: Dataset) -> dict[str, Any]:
    """Train accuracy (on at most 10,000 examples) and test accuracy of the trained model."""
    n_eval = min(len(train), EVAL_TRAIN_EXAMPLES)
    return {
        "train": accuracy(clf, train.x[:n_eval], train.y[:n_eval]),
        "train_examples_evaluated": n_eval,
        "test": accuracy(clf, test.x, test.y),
    }


def save(
    args: argparse.Namespace,
    clf: Classifier,
    trainer: Trainer,
    train: Dataset,
    acc: dict[str, Any],
    *,
    seconds: float,
    device: torch.device,
    out: Path,
) -> Path:
    """Write the model folder (weights, card with the trainer's settings and history) and the defense's artifacts."""
    path = zoo.save_model(
        clf,
        out,
        dataset=args.data,
        training={
            **trainer.settings(),
            "history": trainer.history_,
            "n_train": len(train),
            "wall_seconds": seconds,
            "device": str(device),
            "processes": distributed.world_size(),
        },
        accuracy=acc,
        seed=args.seed,
    )
    trainer.save_artifacts(out)
    return path
