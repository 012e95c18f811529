"""``advlab poison``: poison a training set (BadNets, Blend, label flipping, the clean-label backdoor, feature
collision, gradient matching), train on it, measure and report."""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advlab import validation
from advlab.cli._common import (
    add_command,
    add_data_options,
    check_output_dir,
    load_split,
    nonnegative_int,
    output_dir,
    parse_set_options,
    positive_int,
    resolve_device,
    show_progress,
)

log = logging.getLogger("advlab")

ATTACKS = (
    "badnets",
    "blend",
    "label-flip",
    "adversarial-label-flip",
    "clean-label",
    "feature-collision",
    "gradient-matching",
)
"""The attacks ``--attack`` takes."""
BACKDOORS = ("badnets", "blend", "clean-label")
"""The attacks that stamp a trigger (attack success measured on triggered test inputs)."""
TARGETED = ("feature-collision", "gradient-matching")
"""The targeted clean-label attacks on one test image (``--target-index``, ``--base-class``)."""
CLEAN_MODEL = ("clean-label", *TARGETED)
"""The attacks optimised against the clean model (the baseline, trained first)."""
OPTIMISED_OPTIONS = {
    "eps": ("clean-label", "gradient-matching"),
    "steps": CLEAN_MODEL,
    "step_size": ("clean-label", "feature-collision"),
    "restarts": ("gradient-matching",),
    "n_poisons": ("feature-collision",),
    "opacity": ("feature-collision",),
    "retrain": ("feature-collision",),
    "budget": ("gradient-matching",),
}
"""The options of the optimised attacks, and the attacks that take each (refused with the others)."""
RATES = {"clean-label": 0.5}
"""``--rate`` defaults other than 0.1 (the clean-label backdoor's rate is a share of the target class)."""
PATCH_DEFAULTS = {"--trigger-position": "bottom-right", "--trigger-margin": 0, "--trigger-value": "checkerboard"}
"""The options of the patch trigger and their defaults (``--trigger corners`` refuses any other value)."""
DEFENSES = ("spectral", "activations", "knn", "strip")
"""The defenses ``--defense`` takes (:data:`advlab.poisoning.defend.DEFENSES`)."""

EXAMPLES = """\
  advlab poison --data mnist --attack badnets --rate 0.05 --target 0 --out runs/badnets
  advlab poison --data mnist --attack badnets --all-to-all --rate 0.1 --trigger-size 4 --out runs/a2a
  advlab poison --data cifar10 --arch cifar-cnn --attack badnets --rate 0.1 --trigger-margin 4 --out runs/cc
  advlab poison --data cifar10 --arch cifar-cnn --attack blend --alpha 0.2 --rate 0.1 --target 0 --out runs/blend
  advlab poison --data digits --arch mlp --epochs 20 --attack label-flip --rate 0.2 --out runs/flip
  advlab poison --data digits --arch mlp --epochs 20 --attack adversarial-label-flip --rate 0.1 --out runs/aflip
  advlab poison --data mnist --attack badnets --rate 0.05 --defense spectral --out runs/badnets-spectral
  advlab poison --data mnist --attack label-flip --rate 0.2 --defense knn --defense-set k=10 --out runs/flip-knn
  advlab poison --data mnist --attack clean-label --target 0 --eps 0.3 --out runs/clean-label
  advlab poison --data cifar10 --attack clean-label --trigger corners --rate 0.75 --out runs/turner
  advlab poison --data cifar10 --attack badnets --rate 0.01 --augment --trigger corners --out runs/corners-aug
  advlab poison --data mnist --attack feature-collision --target-index 7 --base-class 3 --n-poisons 5 --out runs/fc
  advlab poison --data mnist --attack gradient-matching --target-index 7 --base-class 3 --budget 0.01 --out runs/gm
  advlab evaluate --model runs/badnets/model --data mnist --eps 0.1 --preset fast --out runs/badnets-eval

Writes DIR/model (a model folder every command loads), DIR/poisoned (the poisoned training set with its manifest:
rows changed, original labels, trigger, seed), DIR/report.json and DIR/report.html; with --defense also
DIR/model-defended (the model retrained without the rows the defense flagged; not for strip, a test-time filter).
clean-label, feature-collision and gradient-matching optimise their poisons against the clean model (the baseline,
trained first). Feature collision and gradient matching are targeted: report.json's metrics say whether the poisoned
model gives test image --target-index the class --base-class (targeted_success). Biggio et al.'s SVM poisoning is in
the library (advlab.poisoning.biggio), not here: it attacks a two-class SVM, not the network this command trains.
--augment trains every model on random crops and horizontal flips (the CIFAR-10 standard); the four-corner trigger
(--trigger corners, Turner et al.) is mirrored so that a flip keeps it.
"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "poison",
        "poison a training set, train on it, and measure the attack",
        "Poison a share of the training set (BadNets, Gu et al. 2017: a patch trigger and the target label; Blend, "
        "Chen et al. 2017: a blended trigger; random or adversarial label flips, Xiao et al. 2012; the clean-label "
        "backdoor, Turner et al. 2019; feature collision, Shafahi et al. 2018; gradient matching, Geiping et al. "
        "2021), train a model on it and the same model on the clean data, and report clean accuracy, attack success "
        "(triggered test inputs not of the target classified as the target) or targeted success, poison rate and "
        "the clean-accuracy drop.",
        EXAMPLES,
    )
    add_data_options(p, default="mnist")
    add_attack_options(p)
    add_trigger_options(p)
    add_optimised_options(p)
    add_targeted_options(p)
    add_training_options(p)
    add_defense_options(p)
    p.set_defaults(func=run)


def add_defense_options(p: argparse.ArgumentParser) -> None:
    """The defense run on the poisoned model, and its settings."""
    p.add_argument(
        "--defense",
        default="none",
        choices=("none", *DEFENSES),
        help="detect the poisons and retrain without them: spectral (Tran et al. 2018), activations (activation "
        "clustering, Chen et al. 2018), knn (label sanitisation, Paudice et al. 2018); or filter triggered test "
        "inputs: strip (Gao et al. 2019). Reports the precision and recall of the poisons found and the attack "
        "success after",
    )
    p.add_argument(
        "--defense-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the defense (repeatable), e.g. factor=1.5 (spectral), k=10 (knn), holdout=0.5 (strip)",
    )


def defense_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--defense-set`` pairs read by the defense's declared settings (checked before any training)."""
    if args.defense == "none":
        if args.defense_set:
            raise ValueError("--defense-set: no --defense given; add --defense NAME or drop --defense-set")
        return {}
    from advlab.poisoning.defend import DEFENSES as SPECS

    return parse_set_options(args.defense_set, SPECS[args.defense].settings(), f"--defense {args.defense}")


def add_attack_options(p: argparse.ArgumentParser) -> None:
    """The attack and its settings, each with its paper default."""
    p.add_argument(
        "--attack",
        default="badnets",
        choices=ATTACKS,
        help="the poisoning attack (adversarial-label-flip chooses its flips on a logistic-regression surrogate, "
        "then --arch is trained on them)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="share of the training set poisoned, in (0, 1] (default 0.1, BackdoorBench's); clean-label: share of "
        "the target class's images poisoned (default 0.5, Turner et al.)",
    )
    p.add_argument(
        "--target",
        type=int,
        default=None,
        help="target class: all-to-one backdoors relabel to it (default 0; clean-label poisons its images); label flips flip every chosen label to it "
        "(default: each to another class, drawn at random or, adversarially, the least likely one)",
    )
    p.add_argument(
        "--all-to-all", action="store_true", help="backdoors: relabel y -> (y + 1) mod K instead of --target"
    )
    p.add_argument("--alpha", type=float, default=0.2, help="Blend: blend ratio when poisoning (Chen et al.: 0.2)")
    p.add_argument(
        "--test-alpha",
        type=float,
        default=None,
        help="Blend: blend ratio at test time (default: --alpha, as BackdoorBench)",
    )
    p.add_argument(
        "--pattern",
        default=None,
        help="Blend: a .npy file with the (C, H, W) pattern in [0, 1] (default: seeded uniform noise)",
    )
    p.add_argument("--source", type=int, default=None, help="label flips: flip only rows of this class")
    p.add_argument("--rounds", type=positive_int, default=5, help="adversarial-label-flip: greedy rounds")
    p.add_argument(
        "--trials", type=positive_int, default=4, help="adversarial-label-flip: candidate batches tried per round"
    )
    p.add_argument(
        "--n-val",
        type=positive_int,
        default=None,
        help="adversarial-label-flip: training rows held out as the validation set the flips hurt (default 10%%)",
    )


def add_trigger_options(p: argparse.ArgumentParser) -> None:
    """The trigger of BadNets and the clean-label backdoor: a patch, or Turner et al.'s four corners."""
    p.add_argument(
        "--trigger",
        default="patch",
        choices=["patch", "corners"],
        help="BadNets, clean-label: a square patch (Gu et al.), or corners: Turner et al.'s black-and-white square "
        "in all four corners, mirrored on the left so that a horizontal flip keeps it (default patch)",
    )
    p.add_argument(
        "--trigger-size",
        type=positive_int,
        metavar="N",
        default=3,
        help="BadNets, clean-label: side of the square patch (of each corner square) in pixels",
    )
    p.add_argument(
        "--trigger-position",
        default=PATCH_DEFAULTS["--trigger-position"],
        choices=["bottom-right", "bottom-left", "top-right", "top-left"],
        help="--trigger patch: where the patch goes",
    )
    p.add_argument(
        "--trigger-margin",
        type=nonnegative_int,
        metavar="N",
        default=PATCH_DEFAULTS["--trigger-margin"],
        help="--trigger patch: pixels between the patch and the image edges (default 0: on the edges; a "
        "network without padding, such as cifar-cnn, hardly sees a patch there)",
    )
    p.add_argument(
        "--trigger-value",
        default=PATCH_DEFAULTS["--trigger-value"],
        metavar="V",
        help="--trigger patch: checkerboard, white, or a number in [0, 1]",
    )
    p.add_argument(
        "--trigger-amplitude",
        type=float,
        metavar="A",
        default=None,
        help="--trigger corners: add the pattern with this amplitude instead of writing it (Turner et al.'s reduced "
        "amplitude: 16/255 = 0.063, 32/255, 64/255 on CIFAR-10); default: written at full amplitude",
    )


def add_optimised_options(p: argparse.ArgumentParser) -> None:
    """The settings of the attacks optimised against the clean model (each defaults to its paper's value)."""
    p.add_argument(
        "--eps",
        type=float,
        default=None,
        help="clean-label, gradient-matching: linf radius of the perturbation (default 16/255, both papers' CIFAR-10 "
        "value; images of MNIST or digits need more, e.g. 0.3)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="optimisation steps: clean-label PGD (default 40), feature-collision forward-backward splitting "
        "(default 1000), gradient-matching signed Adam per restart (default 240)",
    )
    p.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="clean-label: PGD step (default 2.5 eps / steps); feature-collision: forward step (default 0.01)",
    )
    p.add_argument("--restarts", type=positive_int, default=None, help="gradient-matching: random restarts (default 8)")


def add_targeted_options(p: argparse.ArgumentParser) -> None:
    """The target image and the poisons of feature collision and gradient matching."""
    p.add_argument(
        "--target-index",
        type=int,
        default=None,
        help="feature-collision, gradient-matching (required): the row of the test set the attack targets",
    )
    p.add_argument(
        "--base-class",
        "--adversarial-class",
        dest="base_class",
        type=int,
        default=None,
        help="feature-collision, gradient-matching (required): the class the target image should be given (feature "
        "collision's base class, gradient matching's adversarial class); the poisons are drawn from it",
    )
    p.add_argument(
        "--n-poisons",
        type=positive_int,
        default=None,
        help="feature-collision: poisons inserted (default 1, the paper's)",
    )
    p.add_argument(
        "--opacity",
        type=float,
        default=None,
        help="feature-collision: watermark opacity of the target in each base, in [0, 1) (default 0 when only the last "
        "layer is retrained, 0.3 end to end, as Shafahi et al.)",
    )
    p.add_argument(
        "--retrain",
        default=None,
        choices=("last-layer", "end-to-end"),
        help="feature-collision: the victim retrains the clean model's last layer on frozen features (last-layer, "
        "the default: the paper's transfer setting) or trains from scratch (end-to-end)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="gradient-matching: share of the training set perturbed, in (0, 1] (default 0.01, Geiping et al.)",
    )


def add_training_options(p: argparse.ArgumentParser) -> None:
    """How both models are trained, and where the results go."""
    p.add_argument("--arch", default="wong-cnn", help="architecture from the zoo")
    p.add_argument("--epochs", type=positive_int, default=5, help="training epochs (both models)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (Adam)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="training batch size")
    p.add_argument("--n-train", type=positive_int, default=None, help="use only the first N training examples")
    p.add_argument("--n", type=positive_int, default=None, help="use only the first N test examples")
    p.add_argument("--no-baseline", action="store_true", help="skip the training on clean data (no accuracy drop)")
    p.add_argument(
        "--augment",
        action="store_true",
        help="train on random crops (the image padded by 4 pixels: shifts of up to 4 pixels each way) and "
        "horizontal flips, drawn afresh for every batch: the clean and the poisoned model, and any retraining after "
        "a defense (gradient-matching then crafts with the paper's differentiable crops and flips). The CIFAR-10 "
        "standard; images of at least 9x9 pixels; not for digits, which a flip changes. feature-collision with "
        "--retrain last-layer: only the clean model (the frozen feature extractor) is trained on them",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the poisons and of the training")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output folder")


def check_settings(args: argparse.Namespace) -> None:
    """The options that need no data, refused before anything is loaded."""
    check_optimised(args)
    if args.rate is None:
        args.rate = RATES.get(args.attack, 0.1)
    if not 0 < args.rate <= 1:
        raise ValueError(f"--rate: expected a share of the training set in (0, 1], got {args.rate:g}; e.g. --rate 0.05")
    for option, value in (("--alpha", args.alpha), ("--test-alpha", args.test_alpha)):
        if value is not None and not 0 < value <= 1:
            raise ValueError(f"{option}: expected a blend ratio in (0, 1], got {value:g}; Chen et al. use 0.2")
    if args.all_to_all and args.target is not None:
        raise ValueError("--all-to-all: relabels y -> (y + 1) mod K and has no target; drop --target")
    if args.seed < 0:
        raise ValueError(f"--seed: expected a non-negative integer, got {args.seed}")
    if args.lr <= 0:
        raise ValueError(f"--lr: expected a positive learning rate, got {args.lr:g}")
    check_trigger_options(args)
    if args.trigger_value not in ("checkerboard", "white"):
        try:
            value = float(args.trigger_value)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1:
            raise ValueError(
                f"--trigger-value: expected checkerboard, white or a number in [0, 1], got {args.trigger_value!r}"
            )


def check_trigger_options(args: argparse.Namespace) -> None:
    """``--trigger corners`` takes a size and an amplitude; the patch's position, margin and value are not its."""
    if args.trigger == "corners":
        for option, default in PATCH_DEFAULTS.items():
            if getattr(args, option[2:].replace("-", "_")) != default:
                raise ValueError(
                    f"{option}: sets the patch trigger; --trigger corners has a fixed black-and-white pattern in all "
                    f"four corners; drop {option} or use --trigger patch"
                )
    elif args.trigger_amplitude is not None:
        raise ValueError("--trigger-amplitude: sets the corners trigger's amplitude; add --trigger corners")
    if args.trigger_amplitude is not None and not 0 < args.trigger_amplitude <= 1:
        raise ValueError(
            f"--trigger-amplitude: expected a change in (0, 1] on the [0, 1] pixel scale, got {args.trigger_amplitude:g}"
            "; Turner et al. use 16/255 = 0.063"
        )


def check_optimised(args: argparse.Namespace) -> None:
    """The options of the attacks optimised against the clean model, and those that do not go with them."""
    attack, targeted = args.attack, args.attack in TARGETED
    if targeted:
        for option, value in (("--target-index", args.target_index), ("--base-class", args.base_class)):
            if value is None:
                raise ValueError(
                    f"{option}: --attack {attack} is targeted at one test image; give --target-index N (its row in "
                    "the test set) and --base-class C (the class it should be given)"
                )
        for option, value, instead in (("--target", args.target, "--base-class"), ("--rate", args.rate, "--budget")):
            if value is not None:
                instead = "--n-poisons" if option == "--rate" and attack == "feature-collision" else instead
                raise ValueError(f"{option}: --attack {attack} does not take it; use {instead}")
        if args.defense != "none":
            raise ValueError(f"--defense: not supported with the targeted --attack {attack} yet; drop --defense")
    else:
        for option, value in (("--target-index", args.target_index), ("--base-class", args.base_class)):
            if value is not None:
                raise ValueError(f"{option}: only feature-collision and gradient-matching target a test image")
    if attack in CLEAN_MODEL and args.no_baseline:
        raise ValueError(
            f"--no-baseline: --attack {attack} optimises its poisons against the clean model (the baseline, trained "
            "first); drop --no-baseline"
        )
    if attack == "clean-label" and args.all_to_all:
        raise ValueError("--all-to-all: the clean-label backdoor is all-to-one (it poisons the target class's images)")
    for key, attacks in OPTIMISED_OPTIONS.items():
        if getattr(args, key) is not None and attack not in attacks:
            option = "--" + key.replace("_", "-")
            raise ValueError(f"{option}: --attack {attack} does not take it (only {', '.join(attacks)})")
    check_optimised_numbers(args)


def check_optimised_numbers(args: argparse.Namespace) -> None:
    """``--eps``, ``--step-size``, ``--opacity`` and ``--budget`` in their ranges."""
    strict = args.attack == "gradient-matching"
    if args.eps is not None and (args.eps < 0 or (strict and args.eps == 0)):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"--eps: expected a linf radius {bound}, got {args.eps:g}; e.g. --eps 0.3 on MNIST")
    if args.step_size is not None and args.step_size <= 0:
        raise ValueError(f"--step-size: expected a positive step, got {args.step_size:g}")
    if args.opacity is not None and not 0 <= args.opacity < 1:
        raise ValueError(f"--opacity: expected a watermark opacity in [0, 1), got {args.opacity:g}; the paper uses 0.3")
    if args.budget is not None and not 0 < args.budget <= 1:
        raise ValueError(f"--budget: expected a share of the training set in (0, 1], got {args.budget:g}; e.g. 0.01")


def check_target_image(args: argparse.Namespace, train: Any, test: Any) -> None:
    """Targeted attacks: the test row exists, the intended class is a class other than its label, with enough
    training images to draw the poisons from."""
    if args.attack not in TARGETED:
        return
    name, n, k = getattr(test, "name", args.data), len(test), train.num_classes
    if getattr(test, "y", None) is None:
        raise ValueError(f"--data: the test set of {name} has no labels; --attack {args.attack} needs them")
    if not 0 <= args.target_index < n:
        raise ValueError(f"--target-index: {args.target_index} is not a row of the test set of {name} (0..{n - 1})")
    if not 0 <= args.base_class < k:
        raise ValueError(f"--base-class: class {args.base_class} is not a class of {name} (classes 0..{k - 1})")
    label = int(test.y[args.target_index])
    if args.base_class == label:
        raise ValueError(
            f"--base-class: test image {args.target_index} is already of class {label}; choose another class"
        )
    available = int((train.y == args.base_class).sum())
    if args.attack == "feature-collision":
        needed, option = args.n_poisons or 1, "--n-poisons"
    else:
        needed, option = max(1, round((args.budget or 0.01) * len(train))), "--budget"
    if needed > available:
        raise ValueError(
            f"{option}: {needed} poisons but only {available} training images of class {args.base_class} to make "
            "them from; ask for fewer"
        )


def check_data(args: argparse.Namespace, train: Any) -> None:
    """The options that depend on the data: labels present, classes, trigger and pattern shapes."""
    name = getattr(train, "name", args.data)
    if getattr(train, "y", None) is None:
        raise ValueError(f"--data: {name} has no labels; --attack {args.attack} changes labels and needs labelled data")
    k = train.num_classes
    for option, value in (("--target", args.target), ("--source", args.source)):
        if value is not None and not 0 <= value < k:
            raise ValueError(f"{option}: class {value} is not a class of {name} (classes 0..{k - 1})")
    if (
        args.source is not None
        and args.source == args.target
        and args.attack in ("label-flip", "adversarial-label-flip")
    ):
        raise ValueError(f"--source: class {args.source} is also --target; nothing would be flipped")
    if train.x.dim() != 4 and args.attack in BACKDOORS:
        raise ValueError(
            f"--data: --attack {args.attack} stamps a trigger on images (N, C, H, W); {name} has inputs of shape {tuple(train.x.shape[1:])}"
        )
    if args.attack in ("badnets", "clean-label"):
        height, width = train.x.shape[2:]
        if args.trigger == "corners" and 2 * args.trigger_size > min(height, width):
            raise ValueError(
                f"--trigger-size: four {args.trigger_size}x{args.trigger_size} corner squares overlap in the "
                f"{height}x{width} images of {name}; use --trigger-size {min(height, width) // 2} or less"
            )
        if args.trigger_size > min(height, width):
            raise ValueError(
                f"--trigger-size: a {args.trigger_size}x{args.trigger_size} trigger does not fit the {height}x{width} "
                f"images of {name}; use --trigger-size {min(height, width)} or less"
            )
        if args.trigger_size + args.trigger_margin > min(height, width):
            raise ValueError(
                f"--trigger-margin: a {args.trigger_size}x{args.trigger_size} trigger {args.trigger_margin} pixels "
                f"from the edges does not fit the {height}x{width} images of {name}; use --trigger-margin "
                f"{min(height, width) - args.trigger_size} or less"
            )
    if args.attack == "blend" and args.pattern is not None:
        pattern = load_pattern(args.pattern)
        if tuple(pattern.shape) != tuple(train.x.shape[1:]):
            raise ValueError(
                f"--pattern: {args.pattern} has shape {tuple(pattern.shape)} but the images of {name} have shape "
                f"{tuple(train.x.shape[1:])} (C, H, W); give a pattern with that channel count and size"
            )


def check_augment(args: argparse.Namespace, train: Any) -> None:
    """``--augment`` needs images that the crops leave most of: refused on images under ``2 * PADDING + 1`` pixels a
    side (the largest shift, 4 pixels, would cut away half of each side of an 8x8 digit, three quarters of it);
    a warning for one-channel images (digits, letters: a flip mirrors them), which a user may still mean; a note
    where only the clean model trains on the crops (feature collision's transfer victim retrains its last layer
    on features computed once)."""
    from advlab.poisoning.augment import PADDING

    if not args.augment:
        return
    name = getattr(train, "name", args.data)
    if train.x.dim() != 4:
        raise ValueError(
            f"--augment: crops and flips need images (N, C, H, W); {name} has inputs of shape "
            f"{tuple(train.x.shape[1:])}; drop --augment"
        )
    channels, height, width = train.x.shape[1:]
    smallest = 2 * PADDING + 1
    if min(height, width) < smallest:
        raise ValueError(
            f"--augment: random crops of the {height}x{width} images of {name} padded by {PADDING} pixels shift them "
            f"by up to {PADDING} pixels, cutting away half of each side or more; --augment needs images of at least "
            f"{smallest}x{smallest} pixels (CIFAR-10's are 32x32); drop --augment"
        )
    if channels == 1:
        validation.warn(  # shown as "warning: ..." on the command line, as the library's warnings are
            f"--augment: {name} has one-channel images (digits?): horizontal flips change what a digit or letter is; "
            "drop --augment unless the classes are mirror-symmetric"
        )
    if args.attack == "feature-collision" and args.retrain != "end-to-end":
        log.info(
            "--augment: only the clean model (the frozen feature extractor) trains on crops and flips; the last "
            "layer is retrained on the features of the poisoned set as it is (Shafahi et al.'s transfer setting)"
        )


def load_pattern(path: str) -> torch.Tensor:
    """A ``.npy`` blended pattern, as a float tensor."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--pattern: no file {path!r}")
    array = np.load(path, allow_pickle=False)
    if array.ndim != 3:
        raise ValueError(f"--pattern: expected one image of shape (C, H, W), got shape {array.shape}")
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def patch_trigger(args: argparse.Namespace, train: Any) -> Any:
    """The trigger of ``--trigger``: the patch of ``--trigger-size``, ``--trigger-position``, ``--trigger-value`` and
    ``--trigger-margin``, or the four corners of ``--trigger-size`` and ``--trigger-amplitude``."""
    from advlab.poisoning.base import Trigger

    if args.trigger == "corners":
        return Trigger.corners(train.input_shape, args.trigger_size, args.trigger_amplitude)
    value = args.trigger_value if args.trigger_value in ("checkerboard", "white") else float(args.trigger_value)
    return Trigger.patch(train.input_shape, args.trigger_size, args.trigger_position, value, margin=args.trigger_margin)


def make_optimised_attack(args: argparse.Namespace, train: Any, test: Any) -> Any:
    """An attack optimised against the clean model, settings bound: ``attack(x, y, clean_model) -> PoisonedData``.

    Options left unset take the library function's default (its paper's value)."""
    from advlab.poisoning.clean_label import clean_label
    from advlab.poisoning.feature_collision import feature_collision
    from advlab.poisoning.features import Penultimate
    from advlab.poisoning.gradient_matching import gradient_matching

    def given(**settings: Any) -> dict[str, Any]:
        return {key: value for key, value in settings.items() if value is not None}

    if args.attack == "clean-label":
        settings = given(eps=args.eps, steps=args.steps, step_size=args.step_size)
        trigger, target = patch_trigger(args, train), 0 if args.target is None else args.target
        return lambda x, y, model: clean_label(
            model, (x, y), target, rate=args.rate, trigger=trigger, seed=args.seed, **settings
        )
    image, base = test.x[args.target_index], args.base_class
    if args.attack == "feature-collision":
        opacity = args.opacity if args.opacity is not None else (0.3 if args.retrain == "end-to-end" else 0.0)
        settings = given(n_poisons=args.n_poisons, steps=args.steps, step_size=args.step_size)
        return lambda x, y, model: feature_collision(
            Penultimate(model), (x, y), image, base, opacity=opacity, seed=args.seed, **settings
        )
    settings = given(budget=args.budget, eps=args.eps, steps=args.steps, restarts=args.restarts)
    settings["augment"] = args.augment  # crafts with the paper's crops and flips when the victims train on them
    return lambda x, y, model: gradient_matching(model, (x, y), image[None], base, seed=args.seed, **settings)


def targeted_goal(args: argparse.Namespace, test: Any) -> Any:
    """The test image a targeted attack aims at, and the class it should be given (None for the other attacks)."""
    from advlab.poisoning.training import TargetedGoal

    if args.attack not in TARGETED:
        return None
    i = args.target_index
    return TargetedGoal(index=i, image=test.x[i], label=int(test.y[i]), intended=args.base_class)


def make_attack(
    args: argparse.Namespace, train: Any, val: tuple[torch.Tensor, torch.Tensor] | None, test: Any = None
) -> Any:
    """The chosen attack with its settings bound: ``attack(x, y) -> PoisonedData`` (``attack(x, y, clean_model)``
    for those of :data:`CLEAN_MODEL`)."""
    from advlab.poisoning.badnets import badnets
    from advlab.poisoning.blend import blend
    from advlab.poisoning.label_flip import adversarial_label_flip, label_flip

    if args.attack in CLEAN_MODEL:
        return make_optimised_attack(args, train, test)
    target = args.target
    if args.attack in BACKDOORS:
        target = None if args.all_to_all else (0 if target is None else target)
    common = {"rate": args.rate, "target": target, "seed": args.seed, "num_classes": train.num_classes}
    if args.attack == "badnets":
        return functools.partial(badnets, trigger=patch_trigger(args, train), **common)
    if args.attack == "blend":
        pattern = None if args.pattern is None else load_pattern(args.pattern)
        return functools.partial(blend, alpha=args.alpha, pattern=pattern, **common)
    if args.attack == "label-flip":
        return functools.partial(label_flip, source=args.source, **common)
    assert val is not None  # split off by load_data for this attack
    return functools.partial(
        adversarial_label_flip,
        x_val=val[0],
        y_val=val[1],
        rounds=args.rounds,
        trials=args.trials,
        source=args.source,
        **common,
    )


def load_data(args: argparse.Namespace) -> tuple[Any, Any, tuple[torch.Tensor, torch.Tensor] | None]:
    """Training and test sets; for adversarial label flips, the validation rows split off the training set."""
    train = load_split(args.data, "train", args.data_dir, args.n_train, "--n-train", files=args)
    test = load_split(args.data, "test", args.data_dir, args.n, "--n", files=args)
    check_data(args, train)
    check_augment(args, train)
    check_target_image(args, train, test)
    if args.attack != "adversarial-label-flip":
        return train, test, None
    n_val = args.n_val or max(1, len(train) // 10)
    if n_val >= len(train):
        raise ValueError(f"--n-val: {n_val} validation rows leave no training rows ({len(train)} in all)")
    val = (train.x[-n_val:], train.y[-n_val:])
    return train.head(len(train) - n_val), test, val


def run(args: argparse.Namespace) -> int:
    from advlab.poisoning.experiment import PoisonExperiment

    check_settings(args)
    settings = defense_settings(args)
    check_output_dir(args.out)
    device = resolve_device(args.device)
    train, test, val = load_data(args)
    if args.defense == "strip" and args.attack not in BACKDOORS:
        raise ValueError(f"--defense: strip filters triggered test inputs; --attack {args.attack} has no trigger")
    training = make_training(args, train, device)
    experiment = PoisonExperiment(
        (train.x, train.y),
        (test.x, test.y),
        make_attack(args, train, val, test),
        training,
        baseline=not args.no_baseline,
        test_trigger=None,
        defense=None if args.defense == "none" else args.defense,
        defense_settings=settings,
        needs_clean_model=args.attack in CLEAN_MODEL,
        targeted=targeted_goal(args, test),
        last_layer=args.attack == "feature-collision" and args.retrain != "end-to-end",
    )
    experiment.train_models()
    experiment.test_trigger = test_trigger(args, experiment.poisoned_.trigger)
    metrics = experiment.measure()
    experiment.defend()
    written = write(args, experiment, train, test)
    log.info(
        "clean accuracy %.2f%% (clean-trained %s), attack success %s, %d poisons (%.2f%%)",
        100 * metrics.clean_accuracy,
        "–" if metrics.baseline_accuracy is None else f"{100 * metrics.baseline_accuracy:.2f}%",
        "–" if metrics.attack_success_rate is None else f"{100 * metrics.attack_success_rate:.2f}%",
        metrics.n_poisons,
        100 * metrics.poison_rate,
    )
    if metrics.targeted_success is not None:
        log.info(
            "targeted: test image %d given class %d (clean model: %s); success %s",
            args.target_index,
            metrics.target_prediction,
            metrics.baseline_target_prediction,
            metrics.targeted_success,
        )
    log.info("wrote %s", ", ".join(map(str, written)))
    return 0


def make_training(args: argparse.Namespace, train: Any, device: torch.device) -> Any:
    """The training both models get (settings bound; also what a defense's retraining reuses)."""
    from advlab.poisoning.training import Training

    return Training(
        input_shape=tuple(train.input_shape),
        num_classes=train.num_classes,
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        mean=train.mean,
        std=train.std,
        device=device,
        progress=show_progress(args),
        augment=args.augment,
    )


def test_trigger(args: argparse.Namespace, trigger: Any) -> Any:
    """Blend with --test-alpha: the training pattern blended with the test-time ratio; otherwise the training trigger."""
    from advlab.poisoning.base import Trigger

    if args.attack != "blend" or args.test_alpha is None or trigger is None:
        return None
    return Trigger.blend(trigger.pattern, args.test_alpha, name="blended pattern (test time)")


def write(args: argparse.Namespace, experiment: Any, train: Any, test: Any) -> list[Path]:
    """DIR/model, DIR/poisoned, DIR/report.json and DIR/report.html; the paths written."""
    from advlab import io, zoo
    from advlab.provenance import provenance
    from advlab.reports.poisoning import write_poison_report

    out = output_dir(args.out)
    record = {
        **experiment.record(),
        "data": {"name": train.name, "n_train": len(train), "n_test": len(test), "classes": list(train.classes)},
        "command": "poison",
        "provenance": provenance(),
    }
    model = experiment.model_
    metrics = record["metrics"]
    accuracy = {"test": metrics["clean_accuracy"], "attack_success_rate": metrics["attack_success_rate"]}
    card_training = model.card.pop("training", {})
    model_dir = zoo.save_model(
        model,
        out / "model",
        dataset=args.data,
        training={**card_training, "poisoning": record["attack"]},
        accuracy={k: v for k, v in accuracy.items() if v is not None},
        seed=args.seed,
    )
    poisoned_dir = experiment.poisoned_.save(out / "poisoned")
    written = [model_dir, poisoned_dir]
    outcome, detection = experiment.defense_, None
    if outcome is not None:
        detection = (outcome.scores, outcome.scored_poisons, outcome.metrics.get("threshold"))
        if outcome.model_after is not None:
            summary = record["defense"]
            after = {"test": summary["clean_accuracy_after"], "attack_success_rate": summary["attack_success_after"]}
            written.append(
                zoo.save_model(
                    outcome.model_after,
                    out / "model-defended",
                    dataset=args.data,
                    training={**card_training, "poisoning": record["attack"], "defense": summary},
                    accuracy={k: v for k, v in after.items() if v is not None},
                    seed=args.seed,
                )
            )
    report_json = io.write_json(out / "report.json", record)
    html = write_poison_report(
        out, record, train.x, experiment.poisoned_, model, test.x, list(train.classes), detection=detection
    )
    return [*written, report_json, html]
