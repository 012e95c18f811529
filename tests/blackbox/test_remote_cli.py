"""``advlab blackbox`` and ``advlab evaluate`` against a model behind a TF-Serving-style API on loopback: the same
numbers as attacking the model locally with the same seed, the one-line errors, and the credentials."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from _servers import Served, serving, tfserving_app

from advlab.cli import main

DROP = ("provenance", "target", "oracle_queries_total")


@pytest.fixture
def served(saved_model):
    from advlab.zoo import load_model

    return Served(load_model(saved_model))


def _numbers(record: dict) -> dict:
    """A blackbox result without what may differ between two runs: timings, provenance and the target's name."""
    out = {k: v for k, v in record.items() if k not in DROP}
    out["rounds"] = [{k: v for k, v in r.items() if k != "seconds"} for r in out["rounds"]]
    return out


def _blackbox_args(target: str, out) -> list[str]:
    return [
        "blackbox", "--target", target, "--data", "digits", "--seed-size", "20", "--n-eval", "30", "--rounds", "2",
        "--epochs", "3", "--eps", "0.3", "--budget", "1000", "--out", str(out),
    ]  # fmt: skip


def test_blackbox_through_tfserving_equals_the_local_target(saved_model, served, tmp_path):
    assert main(_blackbox_args(str(saved_model), tmp_path / "local")) == 0
    with serving(tfserving_app(served, name="digits")) as url:
        remote = _blackbox_args(url, tmp_path / "remote") + ["--protocol", "tfserving", "--model-name", "digits"]
        assert main(remote) == 0
    local = json.loads((tmp_path / "local" / "result.json").read_text())
    rec = json.loads((tmp_path / "remote" / "result.json").read_text())
    assert _numbers(rec) == _numbers(local)
    assert rec["target"] == {"kind": "http", "url": url, "protocol": "tfserving", "model": "digits"}
    assert rec["oracle_queries_total"] == local["oracle_queries_total"] == served.examples
    assert rec["queries"] == 20 * 2**2  # Papernot's augmentation doubles the set each round


def _evaluate_args(out, *extra: str) -> list[str]:
    return ["evaluate", "--data", "digits", "--n", "20", "--eps", "0.2", "--quiet", "--out", str(out), *extra]


def test_evaluate_through_tfserving_equals_evaluating_the_local_oracle(saved_model, served, tmp_path):
    from advlab.data import load_dataset
    from advlab.evaluation import evaluate
    from advlab.oracles import TorchOracle
    from advlab.zoo import load_model

    local_oracle = TorchOracle(load_model(saved_model), mode="scores")
    expected = evaluate(
        local_oracle, load_dataset("digits", split="test", n=20), 0.2, attacks=["square"], progress=False
    )
    with serving(tfserving_app(served, name="digits")) as url:
        args = ["--target", f"{url}/v1/models/digits", "--protocol", "tfserving", "--attacks", "square"]
        assert main(_evaluate_args(tmp_path / "e", *args, "--budget", "100000")) == 0
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    want = expected.to_dict()
    assert report["examples"] == want["examples"]  # every example: robust or not, by whom, predictions
    assert [r["robust_accuracy"] for r in report["results"]] == [r["robust_accuracy"] for r in want["results"]]
    untimed = [
        [{k: v for k, v in st.items() if k != "wall_time_s"} for st in r["results"][0]["stages"]]
        for r in (report, want)
    ]
    assert untimed[0] == untimed[1]  # per stage: attacked, broken, success rate, queries
    assert report["settings"]["target_queries"] == served.examples == local_oracle.queries
    assert report["settings"]["target"]["protocol"] == "tfserving" and report["model"] == "digits"
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks["randomness"] == "pass" and checks["gradients"] == checks["large_eps"] == "skipped"
    assert want["clean_accuracy"] > 0.8 and report["results"][0]["n_robust"] < 20 * report["clean_accuracy"]


def test_evaluate_refuses_gradient_attacks_on_a_target_before_any_query(served, tmp_path, capsys):
    with serving(tfserving_app(served, name="digits")) as url:
        rc = main(_evaluate_args(tmp_path / "e", "--target", url, "--protocol", "tfserving", "--model-name", "digits"))
    err = capsys.readouterr().err
    assert rc == 2 and "no input gradients" in err and "square" in err and "'apgd-ce'" in err
    assert served.examples == 0 and len(err.strip().splitlines()) == 1


def test_a_target_of_another_protocol_gets_one_line_naming_the_protocols(served, tmp_path, capsys):
    with serving(tfserving_app(served, name="digits")) as url:
        rc = main(_evaluate_args(tmp_path / "e", "--target", url, "--attacks", "square"))
        err = capsys.readouterr().err
        rc_bb = main(_blackbox_args(f"{url}/v1/models/digits", tmp_path / "b"))
        err_bb = capsys.readouterr().err
    for code, text in ((rc, err), (rc_bb, err_bb)):
        assert code == 2 and len(text.strip().splitlines()) == 1 and "Traceback" not in text
        assert "does not speak the 'advlab' protocol" in text
        assert all(p in text for p in ("tfserving", "kserve", "torchserve", "template", "--protocol"))
    assert "--protocol tfserving --model-name digits" in err_bb  # the URL says which


def test_the_token_comes_from_the_environment(saved_model, tmp_path, capsys, monkeypatch):
    from advlab.zoo import load_model

    served = Served(load_model(saved_model), token="t0ps3cret")
    base = ["--protocol", "tfserving", "--model-name", "digits", "--attacks", "square", "--eps", "0.3"]
    with serving(tfserving_app(served, name="digits")) as url:
        assert main(_evaluate_args(tmp_path / "a", "--target", url, *base)) == 2
        assert "refused the credentials" in capsys.readouterr().err
        monkeypatch.setenv("ADVLAB_TEST_TOKEN", "t0ps3cret")
        header = ["--header", "Authorization: Bearer $ADVLAB_TEST_TOKEN"]
        assert main(_evaluate_args(tmp_path / "b", "--target", url, *base, *header)) == 0
    assert served.headers[-1]["authorization"] == "Bearer t0ps3cret"
    written = (tmp_path / "b" / "report.json").read_text() + (tmp_path / "b" / "report.html").read_text()
    assert "t0ps3cret" not in written and "t0ps3cret" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--protocol", "tfserving", "--model-name", "m", "--request-template", "{}"], "--request-template: not used"),
        (["--protocol", "template"], "needs --request-template and --response-path"),
        (["--protocol", "tfserving", "--target-bounds", "0"], "--target-bounds: expected LOW,HIGH"),
        (["--header", "no colon"], "expected 'Name: value'"),
        (["--header", "Authorization: Bearer $ADVLAB_UNSET_VARIABLE"], "$ADVLAB_UNSET_VARIABLE is not set"),
    ],
)
def test_remote_option_errors_are_one_line(extra, message, tmp_path, capsys):
    rc = main(_evaluate_args(tmp_path / "e", "--target", "http://127.0.0.1:9", "--attacks", "square", *extra))
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_model_and_target_are_exclusive(saved_model, tmp_path, capsys):
    assert main(_evaluate_args(tmp_path / "e", "--attacks", "square")) == 2
    assert "give one" in capsys.readouterr().err
    both = _evaluate_args(tmp_path / "e", "--model", str(saved_model), "--protocol", "tfserving")
    assert main(both) == 2 and "describe a --target URL" in capsys.readouterr().err


def test_the_command_line_names_every_protocol_and_only_those():
    from advlab.blackbox import PROTOCOLS
    from advlab.cli._remote import PROTOCOL_NAMES

    assert tuple(PROTOCOLS) == PROTOCOL_NAMES
