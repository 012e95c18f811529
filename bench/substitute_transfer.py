"""Transfer success attack by attack from a Papernot substitute (issue 19's transfer benchmark, black-box half).

The MNIST oracle ``madry-cnn`` (standard training, --oracle-epochs epochs, cached by ``bench/blackbox_zoo.py``'s
helper in --zoo-out) answers labels only, in process (``TorchOracle(mode="labels")``). ``papernot_blackbox`` runs
once with the library defaults (150 seeds = MNIST test 0-149, 6 rounds, eps 0.3; targeted augmentation, ``wong-cnn``
substitute, 30 epochs per round) and no evaluation data; the trained substitute (``SubstituteResult.substitute``,
cached in --out) is then attacked by every white-box attack at linf eps 0.3 on the --n test images that follow the
seeds (the momentum family with its defaults, 10 steps of eps / 10 on the cross-entropy, and again with the
pipeline's PGD budget and loss), and each attack's adversarial points are sent to the oracle. Transfer success is
the share of the images the oracle classifies correctly that it misclassifies after the attack (the pipeline's own
figure, misclassified among all images, is reported beside it).

Usage:
    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 PYTHONPATH=src python bench/substitute_transfer.py --n 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blackbox_zoo import oracle_folder

EPS = 0.3
PGD = {"steps": 100, "step_size": EPS / 30}  # the pipeline's default attack (DEFAULT_ATTACK_OPTIONS)
ATTACKS = {
    "FGSM": ("fgsm", {}),
    "PGD-100, margin (the pipeline's default)": ("pgd", {**PGD, "loss": "margin"}),
    "PGD-100, logit loss": ("pgd", {**PGD, "loss": "logit"}),
    "MI-FGSM": ("mifgsm", {}),
    "DI-FGSM": ("difgsm", {}),
    "TI-FGSM": ("tifgsm", {}),
    "NI-FGSM": ("nifgsm", {}),
    "SI-NI-FGSM": ("sinifgsm", {}),
    "VMI-FGSM (5 samples)": ("vmifgsm", {"samples": 5}),
}
# The transfer attacks again with the pipeline's budget and loss (100 steps of eps / 30 on the margin).
ATTACKS |= {
    f"{label}, PGD's budget (100 steps, margin)": (name, {**settings, **PGD, "loss": "margin"})
    for label, (name, settings) in list(ATTACKS.items())[3:]
}


def substitute(oracle, seeds, folder: Path):
    """The substitute ``papernot_blackbox`` trains with its defaults against ``oracle`` (cached in ``folder``)."""
    from advlab.blackbox import papernot_blackbox
    from advlab.zoo import load_model, save_model

    if (folder / "card.json").exists():
        return load_model(folder).eval(), json.loads((folder / "run.json").read_text())
    t0 = time.perf_counter()
    res = papernot_blackbox(oracle, seeds, eval_every_round=False)
    info = {"queries": res.queries, "seconds": time.perf_counter() - t0, "settings": res.settings}
    save_model(res.substitute, folder, dataset="mnist", training={"papernot": res.settings})
    (folder / "run.json").write_text(json.dumps(info, indent=1, default=str))
    return res.substitute.eval(), info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="evaluation images (MNIST test images after the seeds)")
    ap.add_argument("--seeds", type=int, default=150)
    ap.add_argument("--oracle", default="madry-cnn")
    ap.add_argument("--oracle-epochs", type=int, default=2)
    ap.add_argument("--zoo-out", default="bench/out/blackbox_zoo", help="where blackbox_zoo.py caches oracles")
    ap.add_argument("--out", default="bench/out/substitute_transfer")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from advlab import ThreatModel
    from advlab.attacks import make_attack
    from advlab.blackbox import TorchOracle
    from advlab.data import load_dataset
    from advlab.models import predict
    from advlab.zoo import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zoo = Path(args.zoo_out)
    zoo.mkdir(parents=True, exist_ok=True)
    target = load_model(oracle_folder(zoo, args.oracle, args.oracle_epochs, zoo / "log.txt")).eval()
    oracle = TorchOracle(target, mode="labels")
    test = load_dataset("mnist", "test", n=args.seeds + args.n)
    x, y = test.x[args.seeds :], test.y[args.seeds :]
    sub, info = substitute(oracle, test.x[: args.seeds], out / "substitute")
    correct = oracle.predict(x) == y
    agreement = float((predict(sub, x) == oracle.predict(x)).float().mean())
    threat = ThreatModel("linf", EPS, (0.0, 1.0))
    rows = {}
    for label, (name, settings) in ATTACKS.items():
        t0 = time.perf_counter()
        x_adv = make_attack(name, **settings)(sub, x, y, threat, generator=0).x_adv
        wrong = oracle.predict(x_adv) != y
        rows[label] = {
            "transfer_success": float(wrong[correct].float().mean()),
            "misclassified_all": float(wrong.float().mean()),
            "white_box": float((predict(sub, x_adv) != y).float().mean()),
            "seconds": time.perf_counter() - t0,
        }
        print(label, json.dumps(rows[label]), flush=True)
    from advlab import io
    from advlab.provenance import provenance

    record = {"substitute": info, "agreement": agreement, "oracle_accuracy": float(correct.float().mean())}
    io.write_json(out / "result.json", {**record, "n": args.n, "attacks": rows, "provenance": provenance()})
    lines = [
        "| attack on the substitute (linf 0.3) | transfer success | misclassified (all images) | white-box on the "
        "substitute | seconds |",
        "|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {100 * r['transfer_success']:.1f}% | {100 * r['misclassified_all']:.1f}% | "
            f"{100 * r['white_box']:.1f}% | {r['seconds']:.0f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"agreement {100 * agreement:.1f}%, oracle accuracy {100 * record['oracle_accuracy']:.2f}%")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
