"""``advlab blackbox``: Papernot et al.'s substitute attack against a remote (HTTP) or local model, labels only."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from advlab.cli._common import (
    add_command,
    add_data_options,
    add_model_options,
    check_output_dir,
    load_cli_model,
    load_split,
    output_dir,
    parse_float_list,
    positive_int,
)
from advlab.cli._remote import add_remote_options, is_url, open_remote

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab serve --model runs/m1 --mode labels --port 8000 &      # the black box
  advlab blackbox --target http://127.0.0.1:8000 --data mnist --seed-size 150 --rounds 6 --eps 0.3 --out runs/bb
  advlab blackbox --target runs/m1 --data mnist --budget 5000 --sigma 3 --kappa 400 --out runs/bb-reservoir
  advlab blackbox --target runs/m1 --data digits --attack mifgsm --set steps=20 --out runs/bb-mifgsm
  advlab blackbox --target runs/m1 --substitute mlp --augmentation jacobian --lam 0.1 --tau 3 --epochs 10 \
      --attack fgsm --out runs/bb-paper                               # Papernot et al.'s own setting
  advlab blackbox --target http://127.0.0.1:8501 --protocol tfserving --model-name mnist --data mnist \\
      --header 'Authorization: Bearer $TOKEN' --budget 20000 --out runs/bb-tfs   # a model behind TF-Serving

The first --seed-size test images seed the substitute; the next --n-eval test images measure agreement and
transfer (those queries are reported separately). Writes DIR/result.json, DIR/rounds.png and the trained
substitute in DIR/substitute (a model folder).
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "blackbox",
        "Papernot et al. substitute (black-box) attack on a served or saved model",
        "Train a substitute on the target's labels with Jacobian-based dataset augmentation (Papernot et al. "
        "2017, arXiv:1602.02697), craft adversarial examples on it and measure how many fool the target. The "
        "target is a server URL speaking --protocol (advlab serve, TF-Serving, KServe v2 / Triton, TorchServe or "
        "any JSON API through a template) or a model folder (queried locally through a labels-only oracle). "
        "Every query counts against --budget; when it runs out the attack stops and reports what it has.",
        EXAMPLES,
    )
    p.add_argument(
        "--target", required=True, help="http(s):// URL of a served model (see --protocol), or a model folder"
    )
    add_data_options(p, default="mnist")
    add_model_options(p)
    p.add_argument(
        "--seed-size", type=positive_int, default=150, help="initial substitute training set (first test images)"
    )
    p.add_argument("--n-eval", type=int, default=1000, help="test images (after the seed images) for evaluation")
    _add_substitute_options(p)
    p.add_argument("--budget", type=int, default=None, help="maximum queries to the target (default unlimited)")
    p.add_argument("--seed", type=int, default=0, help="random seed (substitute init, data order, reservoir)")
    add_remote_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def _add_substitute_options(p: argparse.ArgumentParser) -> None:
    """The settings of the substitute procedure, with the library's defaults (``SubstituteSettings``)."""
    from advlab.blackbox.substitute import AUGMENTATIONS, DEFAULT_ATTACK_OPTIONS, DEFAULT_SUBSTITUTE
    from advlab.blackbox.substitute import SubstituteSettings as S

    p.add_argument("--rounds", type=int, default=S.rounds, help="substitute augmentation rounds rho")
    p.add_argument(
        "--augmentation",
        default=S.augmentation,
        choices=AUGMENTATIONS,
        help="targeted: steps toward a random other class (Juuti et al. 2019, the default); jacobian: the paper's "
        "step along the label's Jacobian row (use with --lam 0.1 --tau 3)",
    )
    p.add_argument("--lam", type=float, default=S.lam, help="augmentation step lambda (linf distance of a new point)")
    p.add_argument("--tau", type=int, default=0, help="jacobian: period of the step sign flip (0: never flip)")
    p.add_argument("--augment-steps", type=positive_int, default=S.augment_steps, help="targeted: steps per point")
    p.add_argument("--sigma", type=int, default=None, help="reservoir sampling from this round on (default: off)")
    p.add_argument(
        "--kappa", type=positive_int, default=S.kappa, help="points augmented per round with reservoir sampling"
    )
    p.add_argument(
        "--substitute",
        default=DEFAULT_SUBSTITUTE,
        help="substitute architecture (advlab zoo name); auto: wong-cnn for images, else mlp (FC200-200, the paper's)",
    )
    p.add_argument("--epochs", type=positive_int, default=S.epochs, help="substitute training epochs per round")
    p.add_argument("--lr", type=float, default=S.lr, help="substitute SGD learning rate (momentum 0.9)")
    p.add_argument("--eps", default=str(S.eps), help="transfer attack radius (fractions like 8/255 allowed)")
    p.add_argument("--norm", default=S.norm, choices=["linf", "l2", "l1"], help="transfer attack norm")
    options = ", ".join(f"{k}={v}" for k, v in DEFAULT_ATTACK_OPTIONS.items()) + ", step_size=eps/30"
    p.add_argument(
        "--attack",
        default=S.attack,
        help=f"white-box attack run on the substitute (see 'advlab attacks'); default {S.attack} with {options}; "
        "fgsm is the paper's",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="attack setting (repeatable)")


def open_target(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """A labels-only oracle for ``--target``: the served model at a URL (in ``--protocol``), or a model folder
    queried locally through a :class:`TorchOracle`."""
    from advlab.blackbox import TorchOracle

    target, budget = args.target, args.budget
    if budget is not None and budget < 1:
        raise ValueError(f"--budget: expected a positive number of queries, got {budget}. Leave it out for unlimited.")
    if is_url(target):
        oracle = open_remote(args, mode="labels", budget=budget)
        extra = {} if args.protocol == "advlab" else {"protocol": args.protocol, "model": oracle.model_name}
        return oracle, {"kind": "http", "url": target, **extra}
    path = Path(target)
    if not path.exists():
        raise FileNotFoundError(
            f"--target: {target!r} is neither an http(s):// URL nor an existing model folder. "
            "Examples: --target http://127.0.0.1:8000 or --target runs/m1"
        )
    model = load_cli_model(args, path, option="--target")  # args: the card options (--mean, ...) of a model file
    return TorchOracle(model, mode="labels", budget=budget), {
        "kind": "local",
        "path": str(path.resolve()),
        "card": model.card,
    }


def plot_rounds(rounds: list[dict[str, Any]], path: Path) -> None:
    """Substitute accuracy, agreement and transfer success per round, queries on the second axis."""
    from matplotlib.ticker import MaxNLocator

    from advlab.reports.figures import PALETTE, plt, save_png

    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for key, label, colour in (
        ("substitute_accuracy", "substitute accuracy", PALETTE[0]),
        ("agreement", "agreement with target", PALETTE[2]),
        ("transfer_success", "transfer success", PALETTE[1]),
    ):
        ys = [r[key] * 100 if r[key] is not None else float("nan") for r in rounds]
        ax.plot(xs, ys, marker="o", label=label, color=colour)
    ax.set_xlabel("substitute round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax2 = ax.twinx()
    ax2.plot(xs, [r["queries"] for r in rounds], ls="--", color=PALETTE[7], label="training queries")
    ax2.set_ylabel("training queries (cumulative)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    ax.set_title("Papernot et al. black-box attack")
    save_png(fig, path)


def run(args: argparse.Namespace) -> int:
    from advlab import validation
    from advlab.blackbox.substitute import papernot_blackbox
    from advlab.provenance import provenance

    n_eval = validation.check_int("--n-eval", args.n_eval, minimum=0)
    check_output_dir(args.out)
    eps_values = parse_float_list(args.eps, "--eps")
    if len(eps_values) != 1:
        raise ValueError(f"--eps: expected one radius, got {eps_values}")
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # one "HTTP Request: POST ..." line per query batch
        logging.getLogger("httpx").setLevel(logging.WARNING)
    oracle, target_info = open_target(args)
    x_seed, x_eval, y_eval = split_test_images(
        args.data, args.data_dir, args.seed_size, n_eval, oracle.input_shape, files=args
    )
    log.info(
        "black-box attack on %s: %d seed images, %d rounds, eval on %d images",
        args.target,
        args.seed_size,
        args.rounds,
        n_eval,
    )
    res = papernot_blackbox(
        oracle, x_seed, args.substitute, x_test=x_eval, y_test=y_eval, **_settings(args, eps_values[0])
    )
    record = {
        **res.to_dict(),
        "target": target_info,
        "data": {"name": args.data, "split": "test", "seed_images": args.seed_size, "eval_images": n_eval},
        "oracle_queries_total": oracle.queries,
        "provenance": provenance(),
    }
    written = _write_outputs(args, res, record)
    _log_summary(res)
    log.info("wrote %s", ", ".join(map(str, written)))
    return 0


def split_test_images(
    data_name: str,
    data_dir: str | None,
    seed_size: int,
    n_eval: int,
    input_shape: tuple[int, ...] | None,
    files: argparse.Namespace | None = None,
) -> tuple[Any, Any, Any]:
    """The first ``seed_size`` test images (the seed set), then ``n_eval`` images and labels for evaluation
    (``None`` when ``n_eval`` is 0); ``files`` says how to read a --data file."""
    data = load_split(data_name, "test", data_dir, None, files=files)
    if input_shape is not None and tuple(data.x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"--data: {data_name} images have shape {tuple(data.x.shape[1:])} but the target expects "
            f"{tuple(input_shape)}; pick the dataset the target was trained on"
        )
    if seed_size + n_eval > len(data):
        raise ValueError(
            f"--seed-size + --n-eval: {seed_size} + {n_eval} test images asked for but the {data_name} test split "
            f"has {len(data)}; lower them so that they add up to at most {len(data)}"
        )
    stop = seed_size + n_eval
    if not n_eval:
        return data.x[:seed_size], None, None
    return data.x[:seed_size], data.x[seed_size:stop], data.y[seed_size:stop]


def _settings(args: argparse.Namespace, eps: float) -> dict[str, Any]:
    """The settings of :func:`~advlab.blackbox.papernot_blackbox` given on the command line."""
    from advlab.cli.train import parse_settings

    return {
        "rounds": args.rounds,
        "augmentation": args.augmentation,
        "lam": args.lam,
        "tau": args.tau or None,
        "augment_steps": args.augment_steps,
        "sigma": args.sigma,
        "kappa": args.kappa,
        "epochs": args.epochs,
        "lr": args.lr,
        "eps": eps,
        "norm": args.norm,
        "attack": args.attack,
        "attack_options": parse_settings(args.set) or None,
        "seed": args.seed,
    }


def _write_outputs(args: argparse.Namespace, res: Any, record: dict[str, Any]) -> list[Path]:
    """DIR/result.json, the substitute's model folder (for a zoo architecture) and DIR/rounds.png."""
    from advlab import io
    from advlab.zoo import save_model

    out = output_dir(args.out)
    io.write_json(out / "result.json", record)
    written = [out / "result.json", out / "rounds.png"]
    if res.substitute.card.get("arch"):
        save_model(
            res.substitute,
            out / "substitute",
            dataset=args.data,
            extra={"papernot_blackbox": {"queries": res.queries, "target": args.target}},
        )
        written.append(out / "substitute")
    plot_rounds(record["rounds"], out / "rounds.png")
    return written


def _log_summary(res: Any) -> None:
    last = res.rounds[-1]
    log.info(
        "substitute accuracy %s, agreement %s, transfer success %s, %d training + %d evaluation queries%s",
        _pct(last.substitute_accuracy),
        _pct(last.agreement),
        _pct(res.transfer_success),
        res.queries,
        res.eval_queries,
        " (budget exhausted)" if res.budget_exhausted else "",
    )


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"
