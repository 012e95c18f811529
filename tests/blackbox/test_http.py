"""The HTTP server (Starlette app, 4xx on every bad request) and the HTTPOracle client (retries, clear errors)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advlab import Classifier
from advlab.blackbox import (
    BudgetExceeded,
    HTTPOracle,
    OracleResponseError,
    OracleUnavailable,
    TorchOracle,
)

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

from advlab.blackbox.server import create_app  # noqa: E402

D, C = 6, 3


def _model() -> Classifier:
    lin = nn.utils.skip_init(nn.Linear, D, C)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(C, D, generator=g))
        lin.bias.copy_(torch.randn(C, generator=g))
    return Classifier(lin, num_classes=C, input_shape=(D,)).eval()


@pytest.fixture
def client_factory():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette may warn about its httpx backend on import
        from starlette.testclient import TestClient

    def make(**kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # starlette's TestClient may warn about its httpx backend
            return TestClient(create_app(_model(), **kwargs))

    return make


def _x(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, D, generator=torch.Generator().manual_seed(seed))


def test_info_and_predict_match_the_model(client_factory):
    client = client_factory(mode="scores", max_queries=100)
    info = client.get("/info").json()
    assert info == {
        "mode": "scores",
        "num_classes": C,
        "input_shape": [D],
        "bounds": [0.0, 1.0],
        "queries": 0,
        "max_queries": 100,
        "max_batch": 1024,
    }
    x = _x()
    answer = client.post("/predict", json={"inputs": x.tolist()}).json()
    with torch.no_grad():
        probs = torch.softmax(_model()(x), 1)
    np.testing.assert_allclose(answer["scores"], probs.numpy(), rtol=1e-5, atol=1e-6)
    assert answer["labels"] == probs.argmax(1).tolist() and answer["queries"] == 4
    b64 = base64.b64encode(x.numpy().astype("<f4").tobytes()).decode()
    answer2 = client.post("/predict", json={"inputs_b64": b64, "shape": [4, D]}).json()
    assert answer2["labels"] == answer["labels"] and answer2["queries"] == 8


def test_labels_mode_reveals_no_scores(client_factory):
    client = client_factory(mode="labels")
    answer = client.post("/predict", json={"inputs": _x().tolist()}).json()
    assert set(answer) == {"labels", "queries"}


@pytest.mark.parametrize(
    "body,status,message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"x": 1}', 400, "'inputs'"),
        (b'{"inputs": [[1, 2], [3]]}', 400, "nested lists"),
        (b'{"inputs": [0.1, 0.2]}', 422, "batch of shape"),
        (json.dumps({"inputs": [[0.1] * (D + 1)]}).encode(), 422, "wrong shape"),
        (json.dumps({"inputs": [[2.0] * D]}).encode(), 422, "inside bounds"),
        (b'{"inputs": [[NaN, 0, 0, 0, 0, 0]]}', 422, "NaN"),
        (b'{"inputs_b64": "!!!", "shape": [1, 6]}', 400, "base64"),
        (json.dumps({"inputs_b64": base64.b64encode(b"1234").decode(), "shape": [1, D]}).encode(), 400, "bytes"),
        (json.dumps({"inputs_b64": "", "shape": "1,6"}).encode(), 400, "'shape'"),
    ],
)
def test_bad_requests_get_4xx(client_factory, body, status, message):
    client = client_factory()
    resp = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]
    assert client.get("/info").json()["queries"] == 0


def test_model_without_declared_shape_answers_422_on_a_mismatch():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    net = nn.Sequential(nn.Linear(D, C)).eval()  # a bare module: no input_shape to check requests against
    client = TestClient(create_app(net))
    assert client.post("/predict", json={"inputs": _x().tolist()}).status_code == 200
    resp = client.post("/predict", json={"inputs": [[0.5] * (D + 2)]})
    assert resp.status_code == 422 and "cannot evaluate" in resp.json()["error"]


def test_number_of_classes_is_learned_from_one_forward_pass_that_is_not_a_query():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    class NoLinear(nn.Module):  # nothing declares the number of classes: no Classifier, no final nn.Linear
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(D, C, generator=torch.Generator().manual_seed(0)))

        def forward(self, x):
            return x @ self.w

    app = create_app(NoLinear().eval(), mode="labels", input_shape=(D,))
    info = TestClient(app).get("/info").json()
    assert info["num_classes"] == C and info["queries"] == 0 and info["input_shape"] == [D]


def test_cli_serve_options():
    from advlab.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["serve", "--model", "m"])
    assert args.device == "auto" and args.max_batch == 1024 and args.max_queries is None
    for bad in (["--max-batch", "0"], ["--max-queries", "-5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--model", "m", *bad])


def test_batch_too_large_is_413(client_factory):
    client = client_factory(max_batch=3)
    assert client.post("/predict", json={"inputs": _x(4).tolist()}).status_code == 413
    b64 = base64.b64encode(_x(4).numpy().tobytes()).decode()
    assert client.post("/predict", json={"inputs_b64": b64, "shape": [4, D]}).status_code == 413
    huge = b'{"inputs": [' + b"0," * 100_000 + b"0]}"
    assert client.post("/predict", content=huge).status_code == 413
    assert client.post("/predict", json={"inputs": _x(3).tolist()}).status_code == 200


def test_api_key(client_factory):
    client = client_factory(api_key="s3cret")
    assert client.get("/info").status_code == 401
    assert client.post("/predict", json={"inputs": _x().tolist()}).status_code == 401
    assert (
        client.post("/predict", json={"inputs": _x().tolist()}, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert client.get("/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/info", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_query_limit_is_429_and_nothing_is_evaluated(client_factory):
    client = client_factory(max_queries=6)
    assert client.post("/predict", json={"inputs": _x(4).tolist()}).status_code == 200
    resp = client.post("/predict", json={"inputs": _x(4).tolist()})
    assert resp.status_code == 429 and resp.json()["queries"] == 4 and resp.json()["max_queries"] == 6
    assert client.post("/predict", json={"inputs": _x(2).tolist()}).status_code == 200
    assert client.get("/info").json()["queries"] == 6


# ---------------------------------------------------------------------- HTTPOracle against mock transports
def _canned(handler_predict, mode="scores", max_queries=None):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(
                200,
                json={
                    "mode": mode,
                    "num_classes": C,
                    "input_shape": [D],
                    "bounds": [0, 1],
                    "queries": 0,
                    "max_queries": max_queries,
                    "max_batch": 1024,
                },
            )
        return handler_predict(request)

    return httpx.MockTransport(handler)


def _honest_answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    x = torch.from_numpy(np.frombuffer(base64.b64decode(body["inputs_b64"]), dtype="<f4").reshape(body["shape"]).copy())
    with torch.no_grad():
        p = torch.softmax(_model()(x), 1)
    return httpx.Response(200, json={"labels": p.argmax(1).tolist(), "scores": p.tolist()})


def test_http_oracle_retries_server_errors_then_answers():
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(503, text="overloaded")
        return _honest_answer(request)

    oracle = HTTPOracle("http://target", retries=3, backoff=0.001, transport=_canned(flaky))
    x = _x()
    with torch.no_grad():
        expected = _model()(x).argmax(1)
    assert torch.equal(oracle.predict(x), expected)
    assert calls["n"] == 3 and oracle.queries == 4


def test_http_oracle_retries_connection_errors_with_backoff():
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise httpx.ConnectError("connection refused", request=request)
        return _honest_answer(request)

    oracle = HTTPOracle("http://target", retries=2, backoff=0.01, transport=_canned(flaky))
    start = time.monotonic()
    oracle.scores(_x())
    assert time.monotonic() - start >= 0.01 + 0.02 - 1e-3  # waits backoff * (1 + 2)
    assert calls["n"] == 3


def test_http_oracle_gives_up_after_retries_and_refunds():
    def down(request):
        raise httpx.ConnectError("connection refused", request=request)

    oracle = HTTPOracle("http://target", retries=3, backoff=0.0, transport=_canned(lambda r: down(r)))
    with pytest.raises(OracleUnavailable, match="unreachable after 4 attempt"):
        oracle.predict(_x())
    assert oracle.queries == 0


@pytest.mark.parametrize(
    "response,message",
    [
        (httpx.Response(200, text="<html>hello</html>"), "not JSON"),
        (httpx.Response(200, json={"predictions": [0, 1]}), "no 'scores'"),
        (httpx.Response(200, json={"labels": [0, 1], "scores": [[0.5, 0.3, 0.2]]}), "shape"),
        (httpx.Response(200, json=[1, 2, 3]), "JSON object"),
    ],
)
def test_http_oracle_rejects_garbage_answers(response, message):
    oracle = HTTPOracle("http://target", transport=_canned(lambda r: response))
    with pytest.raises(OracleResponseError, match=message):
        oracle.scores(_x())


def test_http_oracle_wrong_number_of_labels():
    oracle = HTTPOracle(
        "http://target", mode="labels", transport=_canned(lambda r: httpx.Response(200, json={"labels": [0]}))
    )
    with pytest.raises(OracleResponseError, match="expected 4 labels"):
        oracle.predict(_x())


def test_http_oracle_429_is_budget_exceeded():
    answer = httpx.Response(429, json={"error": "query limit reached", "queries": 10, "max_queries": 10})
    oracle = HTTPOracle("http://target", transport=_canned(lambda r: answer))
    with pytest.raises(BudgetExceeded, match="limit is reached") as info:
        oracle.predict(_x())
    assert info.value.spent == 10 and info.value.budget == 10
    assert oracle.queries == 0


def test_http_oracle_scores_mode_needs_a_scores_server():
    with pytest.raises(ValueError, match="answers only labels"):
        HTTPOracle("http://target", mode="scores", transport=_canned(_honest_answer, mode="labels"))


def test_http_oracle_unreachable_port():
    with socket.socket() as s:  # a port nobody listens on: bind, read it, close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OracleUnavailable, match="unreachable"):
        HTTPOracle(f"http://127.0.0.1:{port}", retries=1, backoff=0.0, timeout=2)


# ---------------------------------------------------------------------- a real uvicorn server on loopback
@contextlib.contextmanager
def _serving(app):
    """Run ``app`` under uvicorn on a free loopback port in a thread; yield its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_real_server_with_http_oracle():
    model = _model()
    app = create_app(model, mode="scores", max_queries=50, api_key="k")
    with _serving(app) as url:
        with pytest.raises(PermissionError, match="API key"):
            HTTPOracle(url, api_key="wrong")
        oracle = HTTPOracle(url, api_key="k", batch_size=16)
        assert oracle.mode == "scores" and oracle.num_classes == C and oracle.remaining() == 50
        x = _x(40)
        local = TorchOracle(model, mode="scores")
        torch.testing.assert_close(oracle.scores(x), local.scores(x), rtol=1e-5, atol=1e-6)
        assert oracle.queries == 40 and oracle.remaining() == 10
        with pytest.raises(BudgetExceeded):
            oracle.predict(_x(11))
        assert oracle.predict(_x(10)).shape == (10,)
        assert app.state.oracle.queries == 50
        oracle.close()


def test_attack_over_http_counts_every_query_and_survives_the_server_limit():
    from advlab import ThreatModel
    from advlab.attacks import hopskipjump

    model = _model()
    x = _x(5, seed=3)
    with torch.no_grad():
        y = model(x).argmax(1)
    app = create_app(model, mode="labels", max_queries=3000)
    with _serving(app) as url:
        oracle = HTTPOracle(url)
        result = hopskipjump(oracle, x, y, ThreatModel("l2", 5.0), steps=3, init_num_evals=20)
        assert bool(result.success.all()) and result.info["stopped"] is None
        assert int(result.queries.sum()) == oracle.queries == app.state.oracle.queries
        with torch.no_grad():
            assert bool((model(result.x_adv).argmax(1) != y).all())
        # another client spends the rest of the server's limit behind this client's back: the next attack
        # gets 429 mid-run (and at the final check), stops, and returns its unverified points
        spent_before = app.state.oracle.queries
        HTTPOracle(url).predict(_x(3000 - spent_before - 400, seed=4))  # leaves 400 on the server
        assert oracle.remaining() == 3000 - spent_before  # this client does not know
        partial = hopskipjump(oracle, x, y, ThreatModel("l2", 5.0), steps=50, init_num_evals=20)
        assert partial.info["stopped"] == "budget"
        assert app.state.oracle.queries <= 3000
        assert bool(partial.success.any())
        with torch.no_grad():
            pred = model(partial.x_adv).argmax(1)
        assert bool((pred[partial.success] != y[partial.success]).all())


def test_cli_serve_subprocess(tmp_path):
    """``advlab serve`` on a saved model answers the same labels as the model loaded locally."""
    import subprocess
    import sys

    zoo = pytest.importorskip("advlab.zoo")
    clf = zoo.build_classifier("softmax-regression", input_shape=(D,), num_classes=C, seed=0)
    zoo.save_model(clf, tmp_path / "m", dataset="synthetic")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "advlab",
            "serve",
            "--model",
            str(tmp_path / "m"),
            "--port",
            str(port),
            "--mode",
            "labels",
            "--max-queries",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline, oracle = time.monotonic() + 60, None
        while oracle is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"advlab serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                oracle = HTTPOracle(f"http://127.0.0.1:{port}", retries=0, timeout=5)
            except OracleUnavailable:
                time.sleep(0.2)
        assert oracle is not None, "advlab serve did not come up"
        assert oracle.mode == "labels" and oracle.remaining() == 30
        x = _x(20)
        local = zoo.load_model(tmp_path / "m")
        with torch.no_grad():
            assert torch.equal(oracle.predict(x), local(x).argmax(1))
        with pytest.raises(BudgetExceeded):
            oracle.predict(_x(11))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
