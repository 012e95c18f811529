"""Papernot et al.'s black-box attack against each zoo MNIST architecture as the oracle, over HTTP, CLI defaults.

For each oracle architecture (``wong-cnn``, ``madry-cnn``, ``mlp``; standard training, 2 epochs, cached in --out):

1. ``advlab serve --model ORACLE --mode labels`` (a labels-only HTTP server, one process per oracle);
2. ``advlab blackbox --target http://127.0.0.1:PORT --data mnist --out DIR`` with the command-line defaults
   (150 seed images, 6 rounds, eps 0.3 linf; targeted augmentation, ``wong-cnn`` substitute, PGD on the margin);
3. the paper's FGSM-only attack: FGSM at eps 0.3 on that same substitute (the one ``--attack fgsm`` trains: the
   attack does not enter the substitute's training), sent to the server;
4. the paper's whole setting from the CLI: ``--substitute mlp --augmentation jacobian --lam 0.1 --tau 3
   --epochs 10 --attack fgsm``.

Transfer success, agreement and queries go to DIR/table.md and DIR/result.json.

Usage:
    ADVLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 nice python bench/blackbox_zoo.py   # bench/out/blackbox_zoo
    python bench/blackbox_zoo.py --archs mlp --no-paper                                  # one oracle, faster
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PAPER = ["--substitute", "mlp", "--augmentation", "jacobian", "--lam", "0.1", "--tau", "3", "--epochs", "10"]
PAPER += ["--attack", "fgsm"]


def advlab(*argv: str, log: Path) -> None:
    """Run one advlab command (this interpreter), its output appended to ``log``; raise when it fails."""
    with log.open("a") as f:
        subprocess.run([sys.executable, "-m", "advlab", *argv], check=True, stdout=f, stderr=subprocess.STDOUT)


def oracle_folder(out: Path, arch: str, epochs: int, log: Path) -> Path:
    """The oracle of ``arch`` (standard training, ``epochs`` epochs on MNIST), trained once and cached."""
    folder = out / "oracles" / arch
    if not (folder / "card.json").exists():
        advlab(
            "train",
            "--arch",
            arch,
            "--data",
            "mnist",
            "--epochs",
            str(epochs),
            "--quiet",
            "--out",
            str(folder),
            log=log,
        )
    return folder


def serve(folder: Path, port: int, log: Path) -> subprocess.Popen:
    """``advlab serve --mode labels`` in the background, returned once ``/info`` answers."""
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "advlab", "serve", "--model", str(folder), "--mode", "labels", "--port", str(port)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/info", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"advlab serve on port {port} did not start; see {log}")


def fgsm_on_substitute(run_dir: Path, url: str, seed_size: int, n_eval: int, eps: float) -> float:
    """FGSM (the paper's attack) on the saved substitute of ``run_dir``, judged by the served oracle."""
    from advlab import ThreatModel
    from advlab.attacks import fgsm
    from advlab.blackbox import HTTPOracle
    from advlab.data import load_dataset
    from advlab.zoo import load_model

    test = load_dataset("mnist", "test", n=seed_size + n_eval)
    x, y = test.x[seed_size:], test.y[seed_size:]
    x_adv = fgsm(load_model(run_dir / "substitute"), x, y, ThreatModel("linf", eps, (0.0, 1.0))).x_adv
    return float((HTTPOracle(url).predict(x_adv) != y).float().mean())


def attack_oracle(arch: str, folder: Path, port: int, out: Path, paper: bool, log: Path) -> dict:
    """The rows of one oracle: CLI defaults, FGSM on the same substitute, and the paper's setting."""
    url = f"http://127.0.0.1:{port}"
    proc = serve(folder, port, log)
    rows = {}
    try:
        runs = {"default": []} | ({"paper": PAPER} if paper else {})
        for name, extra in runs.items():
            run_dir = out / arch / name
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            advlab("blackbox", "--target", url, "--data", "mnist", *extra, "--out", str(run_dir), log=log)
            rec = json.loads((run_dir / "result.json").read_text())
            rows[name] = {
                "transfer_success": rec["transfer_success"],
                "agreement": rec["rounds"][-1]["agreement"],
                "per_round": [r["transfer_success"] for r in rec["rounds"]],
                "queries": rec["queries"],
                "eval_queries": rec["eval_queries"],
                "seconds": time.perf_counter() - t0,
                "settings": rec["settings"],
            }
            if name == "default":
                s = rec["settings"]
                fgsm_rate = fgsm_on_substitute(run_dir, url, s["seed_size"], rec["data"]["eval_images"], s["eps"])
                rows["default-fgsm"] = {**rows[name], "transfer_success": fgsm_rate, "per_round": None}
    finally:
        proc.terminate()
        proc.wait()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/blackbox_zoo")
    ap.add_argument("--archs", default="wong-cnn,madry-cnn,mlp", help="oracle architectures (zoo MNIST ones)")
    ap.add_argument("--oracle-epochs", type=int, default=2)
    ap.add_argument("--port", type=int, default=8761, help="first port; one per oracle")
    ap.add_argument("--no-paper", action="store_true", help="skip the paper's own setting (mlp, jacobian, FGSM)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    log = out / "log.txt"
    results = {}
    for i, arch in enumerate(args.archs.split(",")):
        folder = oracle_folder(out, arch, args.oracle_epochs, log)
        results[arch] = attack_oracle(arch, folder, args.port + i, out, not args.no_paper, log)
        print(arch, json.dumps({k: v["transfer_success"] for k, v in results[arch].items()}), flush=True)
    from advlab import io
    from advlab.provenance import provenance

    io.write_json(out / "result.json", {"oracles": results, "provenance": provenance()})
    lines = [
        "| oracle (2 epochs) | attack on the substitute | transfer success | agreement | training queries |",
        "|---|---|---|---|---|",
    ]
    labels = {
        "default": "CLI defaults (wong-cnn substitute, targeted augmentation, PGD-100 margin)",
        "default-fgsm": "FGSM on the same substitute",
        "paper": "paper's setting (mlp, Jacobian λ 0.1 τ 3, 10 epochs, FGSM)",
    }
    for arch, rows in results.items():
        for name, r in rows.items():
            lines.append(
                f"| {arch} | {labels[name]} | {100 * r['transfer_success']:.1f}% | {100 * r['agreement']:.1f}% | "
                f"{r['queries']} |"
            )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
