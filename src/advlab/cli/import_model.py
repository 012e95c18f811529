"""``advlab import``: turn a model file or factory (torch.export, TorchScript, Python + weights) into an advlab model folder."""

from __future__ import annotations

import argparse
import logging

from advlab.cli._common import (
    add_command,
    add_model_options,
    check_output_dir,
    dataset_shape,
    model_error,
    model_info,
)

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab import path/to/nets.py:SmallCNN --weights w.safetensors --input-shape 1,28,28 --data mnist --out runs/mine
  advlab import my_pkg.nets:make_net --weights ckpt.pt --mean 0.1307 --std 0.3081 --input-shape 1,28,28 --out runs/mine
  advlab import net.pt2 --mean 0.4914,0.4822,0.4465 --std 0.247,0.243,0.261 --data cifar10 --out runs/net
  advlab import net_scripted.pt --input-shape 3,32,32 --classes plane,car,bird,cat,deer,dog,frog,horse,ship,truck --out runs/ts
  advlab evaluate --model runs/mine --data mnist --eps 0.3 --preset fast --out runs/mine-eval

The folder holds card.json and model.safetensors (weights never pickled), plus the network: a copy of the .py
file, TorchScript file or exported program, or the module:function spec (which must stay importable). Loading
the folder runs that network's code: import only models you would run. A whole pickled model
(torch.save(model)) is refused, never unpickled: save model.state_dict() and give the class, or export it.
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "import",
        "make an advlab model folder of a torch.export program, a TorchScript file or a Python factory + weights",
        "Load SOURCE as 'advlab attack --model SOURCE' would, check it, and write it as an advlab model folder "
        "(card.json + model.safetensors, written atomically) that every command takes as --model. What the card "
        "says (normalisation, bounds, input shape, classes) comes from the options below or from a sidecar JSON "
        "next to the file (NAME.advlab.json); the input shape of an exported program and the number of classes "
        "(a forward pass) are found when not given. The folder is loaded back and must give the same logits.",
        EXAMPLES,
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a torch.export program (.pt2), a TorchScript file, or a factory with --weights "
        "(my_pkg.nets:make_net or path/to/nets.py:Net)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="the dataset the model was trained on, recorded in the card (its input shape is the default)",
    )
    add_model_options(p)
    p.add_argument("--out", required=True, help="the model folder to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab import io
    from advlab.data import DATASETS
    from advlab.zoo import CARD_FILE, card_summary, import_model

    out = check_output_dir(args.out)
    info = model_info(args)
    if args.data is not None:
        info["dataset"] = DATASETS.get(args.data).name
    try:
        folder = import_model(
            args.source,
            out,
            weights=args.weights,
            info=info,
            sidecar=args.model_card,
            fallback=dataset_shape(args.data),
        )
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise model_error(exc, "SOURCE") from exc
    log.info("wrote %s: %s", folder, card_summary(io.read_json(folder / CARD_FILE)))
    return 0
