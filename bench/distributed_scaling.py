"""Training and evaluation throughput with 1 and N processes (gloo on loopback, one thread per process).

Workload: the wong-cnn (2 strided convs + 2 FC, Wong et al. 2020's MNIST model) trained by advlab's trainers on the
first ``--n`` MNIST training images, global batch ``--batch-size`` (the same in 1 and N processes: each process
takes its part of every batch), Adam. ``standard`` is plain cross-entropy training; ``pgd`` is Madry et al.'s
PGD training at eps 0.3 (ramped up over the first 20% of the epochs, as the recorded MNIST recipe: without it the
network collapses to a constant output) with ``--steps`` steps (5) on each rank's own part.

Each run starts ``nproc`` processes with :func:`advlab.distributed.launch` (torch's elastic agent, as torchrun),
each on one intra-op thread (``OMP_NUM_THREADS=1``; forked from a server that imported torch once), and trains ``--epochs`` epochs; what is timed is the epochs
themselves (the trainer's per-epoch ``seconds``: data order, crafting, forward, backward, gradient all-reduce,
optimiser step), not the start of the processes. The first epoch is a warm-up and is dropped; a run's throughput
is its training images per second over the other epochs, and the figure is the median over ``--rounds`` runs,
the process counts interleaved round by round so a slow phase of a shared machine hits both. The speed-up is the
ratio of the medians. The load average before each run is recorded: N processes need N idle cores, and since the
ranks wait for each other at every step, one core taken by another program slows all of them.

Evaluation (``--evaluate MODEL_DIR``): ``advlab.evaluate`` of a saved model on the first ``--eval-n`` MNIST test
images at linf ``--eval-eps`` with each of ``--presets``, in 1 and N processes started the same way: each rank
attacks every N-th example, rank 0 runs the masking checks and every rank gets the report. What is timed is the
``evaluate`` call on rank 0 (model and data loading excluded, the gathering and the checks included); the report's
robust accuracy is recorded, and must be the same for every process count.

    OMP_NUM_THREADS=1 .venv/bin/python bench/distributed_scaling.py --n 4096 --rounds 3 \
        --out bench/out/distributed_scaling.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/distributed_scaling.py --defenses --evaluate runs/mnist-pgd5 \
        --eval-n 300 --rounds 3 --out bench/out/distributed_eval_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from advlab import distributed, zoo
from advlab.data import load_dataset
from advlab.defenses import DEFENSES
from advlab.provenance import provenance


def train_once(x: torch.Tensor, y: torch.Tensor, defense: str, settings: dict) -> dict:
    """One rank's run: the epoch times of one fit (identical on every rank: they wait for each other each step)."""
    torch.set_num_threads(1)
    clf = zoo.build_classifier("wong-cnn", input_shape=(1, 28, 28), num_classes=10, seed=0)
    trainer = DEFENSES.get(defense)(**settings)
    trainer.fit(clf, (x, y))
    return {"epoch_seconds": [r["seconds"] for r in trainer.history_], "loss": trainer.history_[-1]["train_loss"]}


def evaluate_once(model_dir: str, x: torch.Tensor, y: torch.Tensor, eps: float, preset: str) -> dict:
    """One rank's evaluation: its wall time and the report's robust accuracy (the same on every rank)."""
    from advlab.evaluation import evaluate
    from advlab.zoo import load_model

    torch.set_num_threads(1)
    clf = load_model(model_dir)
    t0 = time.perf_counter()
    report = evaluate(clf, (x, y), eps, attacks=preset, progress=False)
    return {"seconds": time.perf_counter() - t0, "robust_accuracy": report.robust_accuracy(eps)}


def run_evaluations(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> dict:
    results: dict = {f"evaluate-{p}": {n: [] for n in args.nproc} for p in args.presets}
    for r in range(args.rounds):
        for preset in args.presets:
            order = args.nproc if r % 2 == 0 else list(reversed(args.nproc))
            for nproc in order:
                load = os.getloadavg()[0]
                out = distributed.launch(
                    evaluate_once, args.evaluate, x, y, args.eval_eps, preset, nproc=nproc, threads=1,
                    start_method="forkserver",
                )[0]  # fmt: skip
                rate = x.shape[0] / out["seconds"]
                results[f"evaluate-{preset}"][nproc].append(
                    {"images_per_s": rate, "robust_accuracy": out["robust_accuracy"], "load_before": load}
                )
                print(f"round {r + 1}  evaluate {preset:<8}  {nproc} process(es)  {rate:8.2f} images/s  "
                      f"robust {100 * out['robust_accuracy']:.1f}%  (load {load:.2f})")  # fmt: skip
    return results


def run(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> dict:
    common = dict(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=0, progress=False)
    cases = {"standard": common, "pgd": {**common, "eps": 0.3, "steps": args.steps, "eps_rampup": 0.2}}
    results: dict = {d: {n: [] for n in args.nproc} for d in args.defenses}
    for r in range(args.rounds):
        for defense in args.defenses:
            order = args.nproc if r % 2 == 0 else list(reversed(args.nproc))
            for nproc in order:
                load = os.getloadavg()[0]
                out = distributed.launch(
                    train_once, x, y, defense, cases[defense], nproc=nproc, threads=1, start_method="forkserver"
                )[0]
                timed = out["epoch_seconds"][1:] or out["epoch_seconds"]
                rate = x.shape[0] * len(timed) / sum(timed)
                results[defense][nproc].append({"images_per_s": rate, "final_loss": out["loss"], "load_before": load})
                print(f"round {r + 1}  {defense:<8}  {nproc} process(es)  {rate:8.1f} images/s  (load {load:.2f})")
    return results


def summary(results: dict, nprocs: list[int]) -> dict:
    out = {}
    for defense, per_n in results.items():
        medians = {n: statistics.median(run["images_per_s"] for run in per_n[n]) for n in nprocs}
        out[defense] = {
            "images_per_s": medians,
            "speedup": {n: medians[n] / medians[nprocs[0]] for n in nprocs},
            "runs": per_n,
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096, help="MNIST training images")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is a warm-up, not timed)")
    p.add_argument("--batch-size", type=int, default=100, help="global batch size")
    p.add_argument("--steps", type=int, default=5, help="PGD steps of PGD training")
    p.add_argument("--rounds", type=int, default=3, help="runs per case (median)")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts (the first is the base)")
    p.add_argument("--defenses", nargs="*", default=["standard", "pgd"], help="training cases (none: skip training)")
    p.add_argument("--evaluate", default=None, metavar="MODEL_DIR", help="also time advlab.evaluate of this model")
    p.add_argument("--eval-n", type=int, default=300, help="MNIST test images of the evaluation")
    p.add_argument("--eval-eps", type=float, default=0.3, help="linf eps of the evaluation")
    p.add_argument("--presets", nargs="+", default=["fast", "standard"], help="evaluation presets")
    p.add_argument("--data-dir", default=os.environ.get("ADVLAB_DATA"), help="folder with mnist/")
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args()

    import multiprocessing

    multiprocessing.set_forkserver_preload(["torch", "torch._dynamo", "advlab.defenses", "advlab.evaluation", __name__])
    t0 = time.perf_counter()
    raw: dict = {}
    if args.defenses:
        data = load_dataset("mnist", "train", data_dir=args.data_dir, n=args.n, download=False)
        raw.update(run(args, data.x, data.y))
    if args.evaluate:
        test = load_dataset("mnist", "test", data_dir=args.data_dir, n=args.eval_n, download=False)
        raw.update(run_evaluations(args, test.x, test.y))
    results = summary(raw, args.nproc)
    for defense, s in results.items():
        rates = "  ".join(f"{n} proc: {s['images_per_s'][n]:.1f} img/s (x{s['speedup'][n]:.2f})" for n in args.nproc)
        print(f"{defense:<8}  {rates}")
    record = {
        "workload": {k: v for k, v in vars(args).items() if k != "out"},
        "cpu_count": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "wall_seconds": time.perf_counter() - t0,
        "results": results,
        "provenance": provenance(),
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
