"""Fooling images on MNIST: fraction of classes reaching 99% confidence by gradient ascent, steps and time; rubbish-class rate.

Nguyen et al. 2015 (arXiv:1412.1897): images unrecognisable to humans that a network classifies with >= 99%
confidence; here the directly encoded gradient-ascent variant (sign steps of 0.01 on log p_c, no prior), from
uniform noise, a black image and a grey image, on two MNIST models (wong-cnn and an MLP, 2 epochs each).
Also the rubbish-class rate (Goodfellow et al., arXiv:1412.6572): the fraction of Gaussian-noise inputs
classified with confidence > 0.5, for noise with the data's moments N(0.1307, 0.3081^2) and for N(0.5, 0.25^2),
clipped to [0, 1].

Usage:
    OMP_NUM_THREADS=1 nice python bench/fooling_images.py           # bench/out/fooling_images/result.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--noise-n", type=int, default=10000)
    p.add_argument("--out", default="bench/out/fooling_images")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from _mnist_models import mnist_model
    from advlab import io
    from advlab.dataset_level.fooling import fooling_images, rubbish_class_rate
    from advlab.provenance import provenance

    torch.set_num_threads(1)
    record: dict = {"provenance": provenance(), "models": {}}
    print("| model | start | classes >= 99% | median steps | max steps | time (s) |\n|---|---|---|---|---|---|")
    rubbish_lines = []
    for name in ("phys-wong", "phys-mlp"):
        model = mnist_model(name)
        entry: dict = {"card": model.card, "fooling": {}, "rubbish": []}
        for start in ("noise", "blank", "gray"):
            f = fooling_images(model, start=start, steps=args.steps, step_size=0.01, confidence=0.99, generator=0)
            entry["fooling"][start] = f.to_dict()
            reached = f.steps[f.reached]
            med = int(reached.median()) if reached.numel() else None
            mx = int(reached.max()) if reached.numel() else None
            print(
                f"| {model.card.get('arch')} | {start} | {int(f.reached.sum())}/10 | {med} | {mx} | {f.seconds:.2f} |"
            )
        for mean, std in ((None, None), (0.5, 0.25)):
            r = rubbish_class_rate(model, n=args.noise_n, mean=mean, std=std, generator=1)
            entry["rubbish"].append(r.to_dict())
            rubbish_lines.append(
                f"| {model.card.get('arch')} | {r.distribution} | {r.fraction:.3f} | {r.mean_confidence:.3f} |"
            )
        record["models"][name] = entry
    print("\n| model | noise | fraction with confidence > 0.5 | mean top-1 confidence |\n|---|---|---|---|")
    print("\n".join(rubbish_lines))
    io.write_json(Path(args.out) / "result.json", record)


if __name__ == "__main__":
    main()
