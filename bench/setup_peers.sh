#!/usr/bin/env bash
# Create bench/.peers-venv: a separate environment with the peer libraries (torchattacks, foolbox, ART)
# used by bench/pgd_speed.py for comparison. They are not advlab dependencies and never enter .venv.
#
# torch is NOT installed here: a .pth file puts the project venv's site-packages (the same torch build
# that advlab uses) at the end of sys.path, so every library in the comparison runs on one torch binary.
# Peers and their small pure-Python deps are installed with --no-deps so pip never picks a torch version.
#
# Usage: bash bench/setup_peers.sh            (from the repository root; needs .venv to exist)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/bench/.peers-venv"
BASE_PY="$ROOT/.venv/bin/python"
[ -x "$BASE_PY" ] || { echo "error: $BASE_PY not found; create the project venv first" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || "$BASE_PY" -m venv "$VENV"
BASE_SITE="$("$BASE_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
PEER_SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# Appended after the peers venv's own site-packages, so torch, numpy, scipy, scikit-learn, tqdm and advlab
# (editable) come from the project venv.
# site.addsitedir also processes that directory's own .pth files (advlab's editable install).
echo "import site; site.addsitedir('$BASE_SITE')" > "$PEER_SITE/zz_advlab_project_venv.pth"

PIP="$VENV/bin/python -m pip"
# Peer attack libraries, without their dependency resolution (which would pull another torch).
$PIP install --no-deps torchattacks foolbox adversarial-robustness-toolbox
# Their import-time dependencies that the project venv lacks (all pure Python, none pulls torch):
#   foolbox: eagerpy, GitPython (+ gitdb, smmap), requests (+ urllib3, idna, certifi, charset-normalizer)
#   ART: six;  torchattacks: requests
$PIP install --no-deps eagerpy GitPython gitdb smmap requests urllib3 idna certifi charset-normalizer six
# ART's AutoAttack imports multiprocess (and dill) for its parallel mode.
$PIP install --no-deps multiprocess dill
# The reference AutoAttack (Croce & Hein; no registry release): the unmodified copy in ../shared/peers, installed
# here only, never vendored into advlab or made one of its dependencies.
AA_SRC="${AUTOATTACK_SRC:-$ROOT/../shared/peers/auto-attack}"
if [ -d "$AA_SRC" ]; then
    $PIP install --no-deps "$AA_SRC"
else
    echo "note: $AA_SRC not found; the reference AutoAttack is skipped (set AUTOATTACK_SRC to its folder)" >&2
fi
"$VENV/bin/python" - <<'PY'
import importlib
for name in ("torch", "advlab", "torchattacks", "foolbox", "art", "autoattack"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:14s} {getattr(mod, '__version__', '?'):12s} {mod.__file__}")
    except Exception as exc:  # report and go on: the benchmark skips what does not import
        print(f"{name:14s} NOT IMPORTABLE: {type(exc).__name__}: {exc}")
PY
