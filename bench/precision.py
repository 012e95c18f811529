"""Reduced precision and channels-last on CPU: robust accuracy and wall time of PGD-40 and APGD-CE, fp32 vs bf16.

Workload: the wong-cnn on MNIST (Conv16 4x4/2 - ReLU - Conv32 4x4/2 - ReLU - FC100 - ReLU - FC10, with the
data's normalisation inside the Classifier), standard training (``--model DIR`` loads one saved by ``advlab
train``; otherwise it is trained here for ``--epochs`` on the first ``--train-n`` training images), attacked on
the first ``--n`` test images at linf ``--eps`` with PGD-40 (advlab's default step, one random start) and APGD-CE
(100 steps), in one batch, at ``--threads`` intra-op threads.

Four settings of the same network: fp32 (the default), bf16 (autocast to bfloat16 inside the attacks), fp32 with
channels-last weights and inputs, bf16 with channels-last. Rounds are interleaved (the order rotated every round)
and the median time over rounds is reported, with the ratio to fp32. Every setting's success is checked at full
precision (advlab's rule), so the robust accuracies are comparable: the difference is the attack's strength in
bf16, not rounding in the check. ``outcome changes`` counts the examples whose robust/broken outcome differs from
fp32's.

The cost of the full-precision success check is timed too: one fp32 forward of the batch (what the check costs
in every setting) next to one bf16 forward (what it would cost without the rule), and next to the attack's time.

    ADVLAB_DATA=/work/shared/data nice .venv/bin/python bench/precision.py --rounds 3 --out bench/out/precision.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab import Classifier
from advlab.attacks import APGD, PGD, attack_in_batches
from advlab.data import load_dataset
from advlab.models import predict
from advlab.threat import ThreatModel

SETTINGS = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16": {"precision": "bf16", "channels_last": False},
    "fp32+channels_last": {"precision": "fp32", "channels_last": True},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
}
ATTACKS = {"PGD-40": PGD(steps=40), "APGD-CE": APGD(steps=100, loss="ce")}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="test images attacked (one batch)")
    p.add_argument("--eps", type=float, default=0.1, help="linf radius")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats; medians are reported")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--model", default=None, help="a model folder saved by advlab train (default: train one here)")
    p.add_argument("--train-n", type=int, default=10000, help="training images when training here")
    p.add_argument("--epochs", type=int, default=1, help="epochs when training here")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return p.parse_args()


def wong_cnn(args: argparse.Namespace) -> Classifier:
    """The model of ``--model``, or a wong-cnn trained here (standard training, Adam 1e-3, batch 128)."""
    from advlab.defenses import StandardTraining
    from advlab.zoo import build_classifier, load_model

    if args.model:
        return load_model(args.model)
    train = load_dataset("mnist", split="train", n=args.train_n)
    clf = build_classifier("wong-cnn", train.input_shape, train.num_classes, mean=train.mean, std=train.std, seed=0)
    StandardTraining(epochs=args.epochs, seed=0, progress=False).fit(clf, (train.x, train.y))
    return clf.eval()


def variant(clf: Classifier, setting: dict) -> Classifier:
    """A copy of ``clf`` with the setting's precision and memory format."""
    out = copy.deepcopy(clf)
    return out.speed_up(**setting)


def one_run(model: Classifier, attack, x, y, eps: float) -> tuple[float, torch.Tensor]:
    """Wall time of the attack over the batch, and per example whether it stays robust (fp32-checked)."""
    t0 = time.perf_counter()
    r = attack_in_batches(attack, model, x, y, ThreatModel("linf", eps), batch_size=x.shape[0], seed=0)
    seconds = time.perf_counter() - t0
    return seconds, r.correct & ~r.success


def forward_seconds(model: Classifier, x: torch.Tensor, reps: int = 20) -> float:
    """Median time of one gradient-free forward of the batch, in the model's own precision."""
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    clf = wong_cnn(args)
    test = load_dataset("mnist", split="test", n=args.n)
    x, y = test.x, test.y
    models = {name: variant(clf, s) for name, s in SETTINGS.items()}
    clean = float((predict(clf, x) == y).double().mean())
    times: dict[str, dict[str, list[float]]] = {a: {s: [] for s in SETTINGS} for a in ATTACKS}
    robust: dict[str, dict[str, torch.Tensor]] = {a: {} for a in ATTACKS}
    names = list(SETTINGS)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for a_name, attack in ATTACKS.items():
            for s_name in order:
                seconds, rob = one_run(models[s_name], attack, x, y, args.eps)
                times[a_name][s_name].append(seconds)
                robust[a_name][s_name] = rob  # the same every round (seeded)
                print(f"round {r}: {a_name:8s} {s_name:20s} {seconds:6.2f}s robust {float(rob.double().mean()):.4f}")
    fwd32, fwd16 = forward_seconds(models["fp32"], x), forward_seconds(models["bf16"], x)
    with torch.no_grad():
        logit_gap = float((models["bf16"](x) - models["fp32"](x)).abs().max())
    figures = summarize(args, clean, times, robust, fwd32, fwd16, logit_gap)
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0


def summarize(args, clean, times, robust, fwd32, fwd16, logit_gap) -> dict:
    """The figures: per attack and setting, median time, ratio to fp32, robust accuracy, outcome changes."""
    out = {
        "workload": {"n": args.n, "eps": args.eps, "rounds": args.rounds, "threads": args.threads,
                     "model": args.model or f"wong-cnn, {args.epochs} epoch(s) on {args.train_n} MNIST images"},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "clean_accuracy": clean,
        "max_logit_difference_bf16_vs_fp32": logit_gap,
        "success_check": {"fp32_forward_s": fwd32, "bf16_forward_s": fwd16},
        "attacks": {},
    }  # fmt: skip
    for a_name, by_setting in times.items():
        base = statistics.median(by_setting["fp32"])
        rows = {}
        for s_name, ts in by_setting.items():
            med = statistics.median(ts)
            rob = robust[a_name][s_name]
            rows[s_name] = {
                "median_s": med,
                "times_s": ts,
                "speedup_vs_fp32": base / med,
                "robust_accuracy": float(rob.double().mean()),
                "outcome_changes_vs_fp32": int((rob != robust[a_name]["fp32"]).sum()),
            }
        out["attacks"][a_name] = rows
        out["success_check"][f"share_of_{a_name}_bf16"] = fwd32 / statistics.median(by_setting["bf16"])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
