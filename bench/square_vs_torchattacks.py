"""Square alone, advlab vs torchattacks, on the same images in one process: wall time and cost per image-forward.

torchattacks gets the network as a plain module (bench/_peers.py), without advlab's chunked CPU forwards.
The model's forward is wrapped to count calls and images, so the figure divides by the forwards each
implementation really made. Usage (peers venv, see bench/setup_peers.sh):

    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 bench/.peers-venv/bin/python bench/square_vs_torchattacks.py 1000

Argument: queries per example. Model: runs/mnist-pgd5 (see BENCHMARKS.md, "Defenses"); the first 500 correctly
classified MNIST test images; linf eps 0.3; two rounds with seeds 0 and 1, the implementations alternating.
"""

import sys
import time

import torch

torch.set_num_threads(1)
import torchattacks as ta

from _peers import PeerModel
from advlab.attacks import square
from advlab.data import load_dataset
from advlab.threat import ThreatModel
from advlab.zoo import load_model

model = load_model("runs/mnist-pgd5")
d = load_dataset("mnist", "test", data_dir=None, n=600)
x, y = d.x, d.y
with torch.no_grad():
    ok = model(x).argmax(1) == y
x, y = x[ok][:500], y[ok][:500]
nq = int(sys.argv[1])
calls = {"n": 0, "imgs": 0}
orig = model.module.forward


def counting(inp):
    calls["n"] += 1
    calls["imgs"] += inp.shape[0]
    return orig(inp)


model.module.forward = counting
for rnd in range(2):
    for name in ("advlab", "ta"):
        calls.update(n=0, imgs=0)
        t = time.perf_counter()
        if name == "advlab":
            r = square(model, x, y, ThreatModel("linf", 0.3), n_queries=nq, generator=rnd)
            acc = 1 - float(r.success.float().mean())
        else:
            adv = ta.Square(PeerModel(model), eps=0.3, n_queries=nq, seed=rnd)(x, y)
            with torch.no_grad():
                acc = float((model(adv).argmax(1) == y).float().mean())
        dt = time.perf_counter() - t
        print(
            f"round {rnd} {name:7s} acc {acc:.3f} {dt:.1f}s forwards {calls['n']} images {calls['imgs']} -> {dt / calls['imgs'] * 1e6:.1f} us/img",
            flush=True,
        )
