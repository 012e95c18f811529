"""Universal adversarial perturbation on MNIST at eps = 0.3 (linf): fooling rate on held-out data and transfer.

Moosavi-Dezfooli et al. 2017 (arXiv:1610.08401), Algorithm 1 with DeepFool (linf), target fooling rate 0.8
(delta = 0.2), at most --max-passes passes over --n-train training images. Reported: the fooling rate (fraction
of predictions that change) on the first --n test images, on the source model (wong-cnn, runs/phys-wong) and on
a second model (an MLP 784-256-256-10, runs/phys-mlp), each next to a random sign perturbation of the same norm.

Usage:
    OMP_NUM_THREADS=1 nice python bench/universal_mnist.py          # bench/out/universal_mnist/result.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--max-passes", type=int, default=5)
    p.add_argument("--target-fooling-rate", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/universal_mnist")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from _mnist_models import mnist_model
    from advlab import io
    from advlab.data import load_dataset
    from advlab.dataset_level.universal import fooling_rate, universal_perturbation
    from advlab.provenance import provenance
    from advlab.threat import ThreatModel

    torch.set_num_threads(1)
    source, other = mnist_model("phys-wong"), mnist_model("phys-mlp")
    train = load_dataset("mnist", split="train", n=args.n_train)
    test = load_dataset("mnist", split="test", n=args.n)
    threat = ThreatModel("linf", args.eps)
    t0 = time.perf_counter()
    uap = universal_perturbation(
        source,
        train.x,
        threat,
        target_fooling_rate=args.target_fooling_rate,
        max_passes=args.max_passes,
        generator=args.seed,
    )
    g = torch.Generator().manual_seed(args.seed + 1)
    noise = args.eps * torch.randn(uap.perturbation.shape, generator=g).sign()
    rows = {
        "wong-cnn (source)": (fooling_rate(source, test.x, uap.perturbation), fooling_rate(source, test.x, noise)),
        "mlp (transfer)": (fooling_rate(other, test.x, uap.perturbation), fooling_rate(other, test.x, noise)),
    }
    record = {
        **uap.to_dict(),
        "n_train": args.n_train,
        "n_test": args.n,
        "wall_seconds": time.perf_counter() - t0,
        "fooling_rate_test": {k: v[0] for k, v in rows.items()},
        "random_sign_noise_fooling_rate_test": {k: v[1] for k, v in rows.items()},
        "models": {"source": source.card, "transfer": other.card},
        "provenance": provenance(),
    }
    out = Path(args.out)
    io.write_json(out / "result.json", record)
    from safetensors.torch import save as st_save

    io.write_bytes(out / "perturbation.safetensors", st_save({"perturbation": uap.perturbation.contiguous()}))
    print(
        f"UAP linf eps={args.eps}: {uap.passes} passes, train fooling rate {uap.fooling_rate:.3f}, "
        f"{uap.deepfool_calls} DeepFool calls, {uap.seconds:.0f}s; history {[round(h, 3) for h in uap.history]}"
    )
    print("| model | UAP fooling rate | random sign noise |\n|---|---|---|")
    for k, (a, b) in rows.items():
        print(f"| {k} | {a:.3f} | {b:.3f} |")


if __name__ == "__main__":
    main()
