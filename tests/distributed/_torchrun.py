"""Two torchrun agents on this machine as two "nodes" meeting at a c10d rendezvous on loopback (the documented
multi-node command), for the command-line tests of training and evaluation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORT_RACES = ("address already in use", "eaddrinuse", "rendezvousconnectionerror", "connection refused")
"""What the agents print when the rendezvous port was taken between :func:`free_port` and their start (another test
of a parallel run may bind it): the one failure :func:`on_two_nodes` starts again, once, on another port."""


def on_two_nodes(command: list[str], run_id: str, timeout_s: float = 300) -> tuple[list[int], list[str]]:
    """``torchrun --nnodes 2 --node-rank R ... -m advlab COMMAND`` for R = 0, 1, one process each, at once.

    Returns:
        The two agents' exit codes and outputs.
    """
    codes, outputs = _start(command, run_id, timeout_s)
    if codes != [0, 0] and any(race in o.lower() for o in outputs for race in PORT_RACES):
        codes, outputs = _start(command, run_id + "-again", timeout_s)
    return codes, outputs


def _start(command: list[str], run_id: str, timeout_s: float) -> tuple[list[int], list[str]]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
             "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
             "--rdzv-id", run_id, "-m", "advlab", *command],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    outputs = [node.communicate(timeout=timeout_s)[0] for node in nodes]
    return [node.returncode for node in nodes], outputs
