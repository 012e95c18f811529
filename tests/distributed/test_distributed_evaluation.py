"""``advlab.evaluate`` in several processes gives one process's report; a killed rank stops the run and it resumes.

Two ranks of a gloo group on loopback each attack every other example, meet in the focused Square stage (its focus
ranks every example of the stage) and at the end, where rank 0 runs the masking checks once. Because every draw is
keyed by the example and the model (``CentroidNet``) computes each row on its own, the per-example outcomes, the
report's numbers and the checks are identical to one process's, not merely close.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _evaluation_workers import DIE_CODE, checkpoint_files, evaluate_rank, two
from _torchrun import SRC, on_two_nodes

from advlab.attacks import Square
from advlab.cli import main
from advlab.distributed import DistributedError
from advlab.evaluation.engine import RANDOMNESS_PROBE
from advlab.passes import Passes

pytestmark = pytest.mark.distributed

N = 120
SETTINGS = dict(eps=[0.05, 0.1], batch_size=16, progress=False)
TIMED = ("wall_time_s", "clean_wall_time_s", "checks_wall_time_s", "provenance", "settings", "headline", "passes")
"""What may differ between two runs of one evaluation: times, the machine and time of day, the checkpoint folder, and
the passes spent (every rank probes the model before its clean pass; see test_two_processes_sum_their_passes)."""
STAGE_COSTS = ("wall_time_s", "forward_passes", "backward_passes", "forward_per_example", "backward_per_example")
"""What a stage spent, which may depend on how its examples were cut into batches (APGD looks at one example per call
to learn the number of classes)."""


def _numbers(report: dict) -> dict:
    """The report without what :data:`TIMED` names, the stages' costs included."""
    out = {k: v for k, v in report.items() if k not in (*TIMED, "folder")}
    out["results"] = [
        {**r, "stages": [{k: v for k, v in s.items() if k not in STAGE_COSTS} for s in r["stages"]]}
        for r in report["results"]
    ]
    out["checks"] = [{k: v for k, v in c.items() if k != "wall_time_s"} for c in report["checks"]]
    return out


@pytest.fixture(scope="module")
def one_process() -> dict:
    return evaluate_rank(N, SETTINGS)["report"]


def test_two_processes_give_one_process_report(one_process, tmp_path):
    ranks = two(evaluate_rank, N, {**SETTINGS, "checkpoint_dir": str(tmp_path / "ck")})
    assert [(r["rank"], r["size"]) for r in ranks] == [(0, 2), (1, 2)]
    for r in ranks:  # every rank returns the whole report
        assert _numbers(r["report"]) == _numbers(one_process)
        assert r["report"]["provenance"]["world_size"] == 2
    assert one_process["provenance"]["world_size"] == 1
    square = one_process["results"][1]["stages"][2]
    assert square["n_attacked"] > 10  # the focused stage ranked examples of both ranks
    assert [c["status"] for c in one_process["checks"]].count("pass") >= 4  # the checks ran, once, on rank 0
    assert checkpoint_files(str(tmp_path / "ck")) == ["rank-0-of-2/state.safetensors", "rank-1-of-2/state.safetensors"]


def test_two_processes_sum_their_passes(one_process):
    """The report of a two-process evaluation counts every pass of both ranks: an independent counter on each rank's
    model sums to the report's total. The checks (shared out) cost what they cost in one process, and the clean pass
    adds the second rank's probes; the stages may differ from one process's by the passes a batch call spends on its
    own (APGD looks at one example per call)."""
    ranks = two(evaluate_rank, N, SETTINGS, None, False, True)
    counted = [Passes.of(r["passes"]) for r in ranks]
    assert all(c.forward > 0 for c in counted)
    for r in ranks:
        passes = r["report"]["passes"]
        assert Passes.of(passes["total"]) == counted[0] + counted[1]
        assert passes["checks"] == one_process["passes"]["checks"]
        probes = 1 + 2 * RANDOMNESS_PROBE  # the input-gradient probe, the randomness probe's two calls
        assert passes["clean"]["forward"] == one_process["passes"]["clean"]["forward"] + probes
        stages = [s for res in r["report"]["results"] for s in res["stages"]]
        assert sum(s["forward_passes"] for s in stages) == passes["attacks"]["forward"]


def test_a_square_stage_that_keeps_no_example_in_two_processes():
    """At eps 0.5 APGD breaks every example: Square's focused stage has nothing to keep, on any rank."""
    settings = {"eps": [0.1, 0.5], "batch_size": 16, "progress": False, "checks": False}
    one = evaluate_rank(N, settings)["report"]
    assert one["results"][1]["robust_accuracy"] == 0.0
    ranks = two(evaluate_rank, N, settings)
    assert _numbers(ranks[0]["report"]) == _numbers(ranks[1]["report"]) == _numbers(one)


def test_square_gives_up_on_the_breaks_of_every_rank():
    """``focus_min_fooled`` counts the examples fooled by the focus point on every rank: two processes give one
    process's report, at an eps where nothing breaks (every example stops there) and at one where the two ranks'
    breaks together reach the minimum (about 10 break by then, half on each rank)."""
    square = Square(max_queries=300, restarts=1, focus=0.2, focus_after=100, focus_min_fooled=8)
    settings = {"eps": [0.02, 0.08], "batch_size": 16, "progress": False, "checks": False, "attacks": [square]}
    one = evaluate_rank(N, settings)["report"]
    low, high = (r["stages"][0] for r in one["results"])
    assert low["n_broken"] == 0 and low["queries_mean"] == 101.0  # every example stopped at the focus point
    assert high["n_broken"] >= 8 and high["queries_mean"] > 101.0  # the breaks reached the minimum: some went on
    ranks = two(evaluate_rank, N, settings)
    assert _numbers(ranks[0]["report"]) == _numbers(ranks[1]["report"]) == _numbers(one)


def test_a_killed_rank_stops_the_run_and_the_same_command_resumes(one_process, tmp_path):
    settings = {**SETTINGS, "checkpoint_dir": str(tmp_path / "ck")}
    with pytest.raises(DistributedError, match=f"rank 1 exited with code {DIE_CODE}"):
        two(evaluate_rank, N, settings, 60)  # rank 1 dies at its 60th forward pass, in the cascade
    assert "rank-1-of-2/state.safetensors" in checkpoint_files(str(tmp_path / "ck"))  # its finished stages
    ranks = two(evaluate_rank, N, settings)
    assert _numbers(ranks[0]["report"]) == _numbers(one_process)


def test_ranks_with_different_settings_are_refused_before_any_work(tmp_path):
    settings = {**SETTINGS, "checkpoint_dir": str(tmp_path / "ck")}
    with pytest.raises(DistributedError, match="different evaluation settings.*seed"):
        two(evaluate_rank, N, settings, None, True)
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------------- the command line
WORKERS = Path(__file__).with_name("_evaluation_workers.py")
COMMAND = [
    "evaluate", "--model", f"{WORKERS}:CentroidNet", "--input-shape", "1,8,8", "--num-classes", "10",
    "--data", "digits", "--num-examples", "90", "--eps", "0.05,0.1", "--attacks", "apgd-ce,fmn", "--batch-size", "16",
    "--device", "cpu", "--quiet",
]  # fmt: skip


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


@pytest.fixture(scope="module")
def one_cli(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("one") / "eval"
    assert main([*COMMAND, "--out", str(out)]) == 0
    return {**_report(out), "folder": out}


def test_nproc_2_writes_one_report_like_one_process(one_cli, tmp_path):
    assert main([*COMMAND, "--nproc", "2", "--out", str(tmp_path / "two")]) == 0
    two_cli = _report(tmp_path / "two")
    assert _numbers(two_cli) == _numbers(one_cli)
    assert two_cli["provenance"]["world_size"] == 2
    assert "2 processes sharing the examples" in (tmp_path / "two" / "report.html").read_text()
    assert "processes sharing" not in (one_cli["folder"] / "report.html").read_text()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in one_cli["folder"].iterdir())
    ranks = sorted(p.name for p in (tmp_path / "two" / "checkpoint").iterdir())
    assert ranks == ["rank-0-of-2", "rank-1-of-2"]


def test_torchrun_on_two_nodes_over_loopback(one_cli, tmp_path):
    """The documented multi-node command, as two torchrun agents on this machine meeting at a c10d rendezvous."""
    codes, outputs = on_two_nodes([*COMMAND, "--out", str(tmp_path / "two")], "advlab-eval-test")
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert _numbers(_report(tmp_path / "two")) == _numbers(one_cli)


def test_nproc_refuses_a_target_before_starting_processes(tmp_path, capsys):
    command = ["evaluate", "--target", "http://127.0.0.1:9", "--data", "digits", "--eps", "0.1", "--nproc", "2"]
    assert main([*command, "--out", str(tmp_path / "t")]) == 2
    assert "--nproc: a --target is evaluated by the server" in capsys.readouterr().err


def test_a_script_run_by_torchrun_shares_the_evaluation_out(tmp_path):
    """``advlab.evaluate`` in a plain script under ``torchrun`` joins the group itself (no init_process_group)."""
    settings = {"eps": [0.05], "batch_size": 16, "progress": False, "checks": False}
    script = tmp_path / "script.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(WORKERS.parent)!r})\n"
        "from _evaluation_workers import evaluate_rank\n"
        f"r = evaluate_rank(60, {settings!r})\n"
        f"open({str(tmp_path)!r} + f'/rank{{r[\"rank\"]}}.json', 'w').write(json.dumps(r))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["size"]) for r in ranks] == [(0, 2), (1, 2)]
    one = evaluate_rank(60, settings)["report"]
    assert _numbers(ranks[0]["report"]) == _numbers(ranks[1]["report"]) == _numbers(one)
