"""The protocol adapters against real servers on loopback: TF-Serving REST, KServe v2, TorchServe, a JSON template.

Every server computes its answers with a local ``TorchOracle``; the adapters must return exactly what that oracle
returns (JSON carries float32 values exactly), count every example as one query, and say clearly what is wrong
when the server speaks another protocol, refuses the credentials or answers something else.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from advlab import Classifier, ThreatModel

pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from _servers import Served, custom_app, kserve_app, serving, tfserving_app, torchserve_app

from advlab.attacks import square
from advlab.blackbox import (
    PROTOCOLS,
    BudgetExceeded,
    HTTPOracle,
    KServeOracle,
    OracleResponseError,
    ProtocolMismatch,
    TemplateOracle,
    TFServingOracle,
    TorchOracle,
    TorchServeOracle,
    as_module,
    connect,
    request_headers,
)
from advlab.blackbox.server import create_app

C = 4
SHAPE = (1, 4, 4)


def _model() -> Classifier:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, C))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return Classifier(net, num_classes=C, input_shape=SHAPE).eval()


def _x(n: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _local(mode: str = "scores") -> TorchOracle:
    return TorchOracle(_model(), mode=mode)


def _expected(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """The local oracle's scores on the chunks the server sees (a matmul's rounding may depend on the batch size)."""
    return torch.cat([_local().scores(c) for c in x.split(chunk)])


# ---------------------------------------------------------------------- TF-Serving
def test_tfserving_reads_the_metadata_and_answers_exactly_what_the_model_does():
    served = Served(_model())
    with serving(tfserving_app(served)) as url:
        oracle = TFServingOracle(url, model="net", batch_size=4, budget=100)
        assert (oracle.mode, oracle.num_classes, oracle.input_shape) == ("scores", C, SHAPE)
        x = _x(10)
        assert torch.equal(oracle.scores(x), _expected(x, 4))
        assert torch.equal(oracle.predict(x), _expected(x, 4).argmax(1))
        assert oracle.queries == served.examples == 20 and served.requests == 6  # chunks of 4, 4, 2; twice
        assert oracle.remaining() == 80
        with pytest.raises(BudgetExceeded):
            oracle.predict(_x(81))
        assert served.examples == 20  # nothing of a refused batch is sent
        assert oracle.describe() == {
            "oracle": "TFServingOracle",
            "mode": "scores",
            "input_shape": list(SHAPE),
            "bounds": [0.0, 1.0],
            "protocol": "tfserving",
            "url": url,
            "model": "net",
            "version": None,
            "signature": "serving_default",
            "output": "probs",
        }


def test_tfserving_url_may_name_the_model_and_logits_are_told_apart():
    served = Served(_model(), output="logits")
    with serving(tfserving_app(served)) as url:
        oracle = TFServingOracle(f"{url}/v1/models/net/versions/1:predict")
        assert oracle.model_name == "net" and oracle.version == "1" and oracle.output == "auto"
        x = _x(6)
        torch.testing.assert_close(oracle.scores(x), _local().scores(x), rtol=0, atol=1e-7)
        assert oracle.output == "logits"  # told from the first answer: rows do not sum to one


def test_tfserving_labels_model_is_a_labels_oracle():
    served = Served(_model(), output="labels")
    with serving(tfserving_app(served)) as url:
        with pytest.raises(ValueError, match="number of classes"):
            TFServingOracle(url, model="net")
        oracle = TFServingOracle(url, model="net", num_classes=C)
        assert oracle.mode == "labels" and oracle.output == "labels"
        assert torch.equal(oracle.predict(_x()), _local().predict(_x()))
        with pytest.raises(RuntimeError, match="labels"):
            oracle.scores(_x())
        with pytest.raises(ValueError, match="answers labels only"):
            TFServingOracle(url, model="net", num_classes=C, mode="scores")


def test_tfserving_nhwc_layout_and_several_outputs():
    served = Served(_model(), layout="nhwc")
    with serving(tfserving_app(served, outputs=("probs", "probs_copy"))) as url:
        with pytest.raises(ValueError, match="2 outputs .*probs, probs_copy"):
            TFServingOracle(url, model="net", layout="nhwc")
        oracle = TFServingOracle(url, model="net", layout="nhwc", output_name="probs_copy")
        assert oracle.input_shape == SHAPE  # the server's (4, 4, 1) as attacks see it
        assert torch.equal(oracle.scores(_x()), _local().scores(_x()))


def test_tfserving_unknown_model_says_so():
    with serving(tfserving_app(Served(_model()))) as url:
        with pytest.raises(ValueError, match="does not know this model .*Servable not found.*--model-name"):
            TFServingOracle(url, model="nope")
        with pytest.raises(ValueError, match="name the served model"):
            TFServingOracle(url)


# ---------------------------------------------------------------------- the 404 message
def test_a_server_of_another_protocol_gets_one_line_listing_the_protocols():
    with serving(tfserving_app(Served(_model()))) as url:
        with pytest.raises(ProtocolMismatch) as info:
            HTTPOracle(url, retries=0)
        message = str(info.value)
        assert "\n" not in message and "GET /info answered HTTP 404" in message
        for name in PROTOCOLS:
            assert name in message
        assert "--protocol" in message and "--model-name" in message
        with pytest.raises(ProtocolMismatch, match="looks like tfserving: --protocol tfserving --model-name net"):
            HTTPOracle(f"{url}/v1/models/net", retries=0)
    with serving(create_app(_model())) as url:  # advlab's own server asked in another protocol
        with pytest.raises(ProtocolMismatch, match="tfserving.*GET /v1/models/net/metadata answered HTTP 404"):
            TFServingOracle(url, model="net")
        with pytest.raises(ProtocolMismatch, match="kserve"):
            KServeOracle(url, model="net")
        with pytest.raises(ProtocolMismatch, match="torchserve"):
            TorchServeOracle(url, model="net", num_classes=C)


# ---------------------------------------------------------------------- KServe v2 / Triton
def test_kserve_v2_flat_tensors_and_labels():
    served = Served(_model())
    with serving(kserve_app(served)) as url:
        oracle = KServeOracle(f"{url}/v2/models/net", batch_size=3)
        assert (oracle.num_classes, oracle.input_shape, oracle.input_name) == (C, SHAPE, "input__0")
        x = _x(7)
        assert torch.equal(oracle.scores(x), _expected(x, 3))
        assert oracle.queries == served.examples == 7 and served.requests == 3
        with pytest.raises(ValueError, match="unknown model"):
            KServeOracle(url, model="nope")
    served = Served(_model(), output="labels")
    with serving(kserve_app(served)) as url:
        oracle = KServeOracle(url, model="net", num_classes=C)
        assert oracle.mode == "labels" and torch.equal(oracle.predict(_x()), _local().predict(_x()))


# ---------------------------------------------------------------------- TorchServe
def test_torchserve_one_request_per_example_sent_concurrently():
    served = Served(_model())
    with serving(torchserve_app(served)) as url:
        oracle = TorchServeOracle(url, model="net", concurrency=4, input_shape=SHAPE)
        x = _x(9)
        assert torch.equal(oracle.scores(x), _expected(x, 1))  # the order survives the concurrency
        assert oracle.num_classes == C  # learned from the first answer
        assert served.requests == served.examples == oracle.queries == 9


def test_torchserve_top_k_mapping_is_enough_for_labels_not_for_scores():
    served = Served(_model())
    with serving(torchserve_app(served, answer="mapping")) as url:
        oracle = TorchServeOracle(f"{url}/predictions/net", mode="labels", num_classes=C)
        assert torch.equal(oracle.predict(_x()), _local().predict(_x()))
        with pytest.raises(OracleResponseError, match="not all 4"):
            TorchServeOracle(url, model="net", num_classes=C).scores(_x(2))


# ---------------------------------------------------------------------- the generic template
def test_template_batch_flat_and_per_example():
    served = Served(_model())
    with serving(custom_app(served)) as url:
        nested = TemplateOracle(f"{url}/api/classify", '{"data": {"x": "{{inputs}}"}}', "$.result.probs", batch_size=4)
        x = _x(6)
        assert torch.equal(nested.scores(x), _expected(x, 4)) and nested.queries == 6
        flat = TemplateOracle(
            f"{url}/api/flat", {"values": "{{inputs_flat}}", "dims": "{{shape}}"}, "out[0].data", num_classes=C
        )
        assert torch.equal(flat.scores(x), _local().scores(x))
        one = TemplateOracle(f"{url}/api/one", '{"example": "{{input}}"}', "label", output="labels", num_classes=C)
        assert one.mode == "labels" and torch.equal(one.predict(x), _local().predict(x))
        wrong = TemplateOracle(f"{url}/api/classify", '{"data": {"x": "{{inputs}}"}}', "result.scores")
        with pytest.raises(OracleResponseError, match="no 'scores' at result .*probs"):
            wrong.scores(x)
        assert wrong.queries == 0  # refunded: nothing answered
        with pytest.raises(ProtocolMismatch, match="POST /api/nope answered HTTP 404"):
            TemplateOracle(f"{url}/api/nope", '{"x": "{{inputs}}"}', "y").predict(x)


@pytest.mark.parametrize(
    "template,message",
    [
        ('{"x": "{{inputs}}"', "not JSON"),
        ('{"x": 1}', "exactly one"),
        ('{"a": "{{inputs}}", "b": "{{input}}"}', "exactly one"),
    ],
)
def test_template_errors(template, message):
    with pytest.raises(ValueError, match=message):
        TemplateOracle("http://127.0.0.1:1/x", template, "y")


# ---------------------------------------------------------------------- headers, retries, rate limits
def test_auth_header_from_the_environment_is_sent_and_never_shown(monkeypatch, caplog):
    served = Served(_model(), token="s3cret-token")
    with serving(tfserving_app(served)) as url:
        with pytest.raises(PermissionError) as info:
            TFServingOracle(url, model="net", retries=0)
        assert "no header was sent" in str(info.value) and "--header" in str(info.value)
        with pytest.raises(PermissionError) as info:
            TFServingOracle(url, model="net", headers={"Authorization": "Bearer wrong-token"})
        assert "Authorization" in str(info.value) and "wrong-token" not in str(info.value)
        monkeypatch.setenv("TOKEN", "s3cret-token")
        with caplog.at_level(logging.DEBUG):
            oracle = TFServingOracle(url, model="net", headers=request_headers(["Authorization: Bearer $TOKEN"]))
            oracle.predict(_x())
        assert served.headers[-1]["authorization"] == "Bearer s3cret-token"
        assert "s3cret-token" not in caplog.text and "s3cret-token" not in json.dumps(oracle.describe())
        monkeypatch.delenv("TOKEN")
        monkeypatch.setenv("ADVLAB_HTTP_HEADERS", '{"Authorization": "Bearer ${SECRET}"}')
        monkeypatch.setenv("SECRET", "s3cret-token")
        assert connect(url, "tfserving", model="net", headers=request_headers()).predict(_x(2)).shape == (2,)
        monkeypatch.delenv("SECRET")
        with pytest.raises(ValueError, match=r"\$SECRET is not set"):
            request_headers()


def test_server_errors_and_rate_limits_are_retried():
    served = Served(_model(), fail_first=2, rate_limit_first=1)
    with serving(tfserving_app(served)) as url:
        oracle = TFServingOracle(url, model="net", retries=3, backoff=0.001)
        assert torch.equal(oracle.predict(_x()), _local().predict(_x()))
        assert oracle.queries == 10
        served.fail_first = 5
        with pytest.raises(Exception, match="unreachable after 2 attempt"):
            TFServingOracle(url, model="net", retries=1, backoff=0.001).predict(_x())


def test_connect_checks_the_protocol_and_its_options():
    with pytest.raises(ValueError, match="protocol: expected one of .*advlab speaks"):
        connect("http://127.0.0.1:1", "grpc")
    with pytest.raises(TypeError, match="request_template: not an option of the 'tfserving' protocol"):
        connect("http://127.0.0.1:1", "tfserving", model="m", request_template="{}")


# ---------------------------------------------------------------------- an attack over each protocol
@pytest.mark.parametrize("protocol", ["tfserving", "kserve", "template"])
def test_square_over_http_matches_the_local_oracle_query_for_query(protocol):
    """Same seed, same answers: the same adversarial examples and the same query counts, locally and remotely."""
    x = _x(6, seed=7)
    y = _local().predict(x)
    threat = ThreatModel("linf", 0.3)
    local = _local()
    expected = square(as_module(local), x, y, threat, max_queries=200, generator=3)
    served = Served(_model())
    app = {"tfserving": tfserving_app, "kserve": kserve_app, "template": custom_app}[protocol](served)
    with serving(app) as url:
        options = {"model": "net"} if protocol != "template" else {}
        target = url if protocol != "template" else f"{url}/api/classify"
        if protocol == "template":
            options = {"request_template": '{"data": {"x": "{{inputs}}"}}', "response_path": "result.probs"}
        oracle = connect(target, protocol, **options)
        got = square(as_module(oracle), x, y, threat, max_queries=200, generator=3)
    assert torch.equal(got.x_adv, expected.x_adv) and torch.equal(got.success, expected.success)
    assert torch.equal(got.queries, expected.queries)
    assert oracle.queries == local.queries == served.examples >= int(got.queries.sum())
    assert 0 < int(got.success.sum()) < x.shape[0]  # both outcomes are compared


def test_headers_read_variables_and_refuse_malformed_input():
    env = {"TOKEN": "abc", "ADVLAB_HTTP_HEADERS": '{"X-Team": "${TEAM}"}', "TEAM": "red"}
    assert request_headers(["Authorization: Bearer $TOKEN", "X-Team: blue"], environ=env) == {
        "X-Team": "blue",  # a header line wins over the environment's JSON
        "Authorization": "Bearer abc",
    }
    for bad, message in (('["x"]', "JSON object of strings"), ("{nope", "expected a JSON object")):
        with pytest.raises(ValueError, match=message):
            request_headers(environ={"ADVLAB_HTTP_HEADERS": bad})
    with pytest.raises(ValueError, match="not a header name"):
        request_headers(["Bad Name: x"], environ={})
