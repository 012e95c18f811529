"""Small servers that speak the serving protocols (TF-Serving REST, KServe v2, TorchServe, a custom JSON API) for a
local torch model, run under uvicorn on a free loopback port in a thread.

Each computes its answers with a :class:`~advlab.oracles.TorchOracle` in scores mode, so a client that reads
them exactly sees exactly what that oracle sees locally, and counts the requests and examples it served.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advlab.models import Classifier, predict
from advlab.oracles import TorchOracle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route


@dataclass
class Served:
    """The model behind a test server, what it answers, and what it saw."""

    model: Classifier
    output: str = "probabilities"  # or "logits", "labels"
    layout: str = "nchw"
    token: str | None = None
    requests: int = 0
    examples: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_first: int = 0  # answer 503 to the first requests
    rate_limit_first: int = 0  # answer 429 (Retry-After: 0) to the first requests

    def __post_init__(self) -> None:
        self.oracle = TorchOracle(self.model, mode="scores")

    def refused(self, request: Request) -> Response | None:
        """401 without the token, 503/429 while told to fail; ``None`` when the request may go on."""
        self.headers.append(dict(request.headers))
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        if self.fail_first > 0:
            self.fail_first -= 1
            return JSONResponse({"error": "overloaded"}, status_code=503)
        if self.rate_limit_first > 0:
            self.rate_limit_first -= 1
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "0"})
        return None

    def answer(self, inputs: Any) -> list[Any]:
        """The model's answers on a batch sent as (nested) lists, in the server's layout."""
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float64), dtype=torch.float32)
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2).contiguous()
        self.requests += 1
        self.examples += x.shape[0]
        if self.output == "logits":
            return predict(self.model, x, batch_size=512, logits=True).tolist()
        scores = self.oracle.scores(x)
        return scores.argmax(1).tolist() if self.output == "labels" else scores.tolist()

    def server_shape(self) -> list[int]:
        shape = list(self.model.input_shape or ())
        return shape[1:] + shape[:1] if self.layout == "nhwc" and len(shape) == 3 else shape


def tfserving_app(served: Served, name: str = "net", outputs: tuple[str, ...] = ("probs",)) -> Starlette:
    """TF-Serving REST: ``GET /v1/models/NAME/metadata``, ``POST /v1/models/NAME:predict`` (``instances``)."""

    def tensor_info(dtype: str, dims: list[int]) -> dict[str, Any]:
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims]}, "name": "x:0"}

    classes = served.model.num_classes
    out_dims = [-1] if served.output == "labels" else [-1, classes]
    out_dtype = "DT_INT64" if served.output == "labels" else "DT_FLOAT"
    metadata = {
        "model_spec": {"name": name, "signature_name": "", "version": "1"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {"x": tensor_info("DT_FLOAT", [-1, *served.server_shape()])},
                        "outputs": {o: tensor_info(out_dtype, out_dims) for o in outputs},
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }

    async def models(request: Request) -> Response:
        refused = served.refused(request)
        if refused is not None:
            return refused
        rest = request.path_params["rest"]
        model = rest.split(":")[0].split("/")[0]
        if model != name:
            return JSONResponse({"error": f"Servable not found for request: Latest({model})"}, status_code=404)
        if request.method == "GET" and rest.endswith("/metadata"):
            return JSONResponse(metadata)
        if request.method == "POST" and rest.endswith(":predict"):
            body = json.loads(await request.body())
            answers = served.answer(body["instances"])
            if len(outputs) > 1:
                return JSONResponse({"predictions": [{o: a for o in outputs} for a in answers]})
            return JSONResponse({"predictions": answers})
        return JSONResponse({"error": "Malformed request"}, status_code=400)

    return Starlette(routes=[Route("/v1/models/{rest:path}", models, methods=["GET", "POST"])])


def kserve_app(served: Served, name: str = "net") -> Starlette:
    """KServe v2: ``GET /v2/models/NAME``, ``POST /v2/models/NAME/infer`` (flat row-major data with a shape)."""
    classes = served.model.num_classes
    labels = served.output == "labels"
    metadata = {
        "name": name,
        "versions": ["1"],
        "platform": "pytorch_torchscript",
        "inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, *served.server_shape()]}],
        "outputs": [
            {"name": "output__0", "datatype": "INT64" if labels else "FP32", "shape": [-1] if labels else [-1, classes]}
        ],
    }

    async def meta(request: Request) -> Response:
        if request.path_params["name"] != name:
            return JSONResponse(
                {"error": f"Request for unknown model: '{request.path_params['name']}' is not found"}, status_code=400
            )
        return served.refused(request) or JSONResponse(metadata)

    async def infer(request: Request) -> Response:
        refused = served.refused(request)
        if refused is not None:
            return refused
        (inp,) = json.loads(await request.body())["inputs"]
        assert inp["name"] == "input__0" and inp["datatype"] == "FP32"
        x = np.asarray(inp["data"], dtype=np.float64).reshape(inp["shape"])
        answers = np.asarray(served.answer(x))
        out = {"name": "output__0", "datatype": metadata["outputs"][0]["datatype"], "shape": list(answers.shape)}
        return JSONResponse({"model_name": name, "outputs": [{**out, "data": answers.ravel().tolist()}]})

    return Starlette(
        routes=[
            Route("/v2/models/{name}", meta, methods=["GET"]),
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        ]
    )


def torchserve_app(served: Served, name: str = "net", answer: str = "list") -> Starlette:
    """TorchServe: ``GET /ping``; ``POST /predictions/NAME`` with one example as the body; the answer is the
    score list, or (``answer="mapping"``) a class-index-to-probability mapping of the top 3."""

    async def ping(request: Request) -> Response:
        return JSONResponse({"status": "Healthy"})

    async def predictions(request: Request) -> Response:
        refused = served.refused(request)
        if refused is not None:
            return refused
        if request.path_params["name"] != name:
            return JSONResponse({"code": 404, "type": "ModelNotFoundException", "message": "Model not found"}, 404)
        (scores,) = served.answer([json.loads(await request.body())])
        if answer == "mapping":
            top = np.argsort(scores)[::-1][:3]
            return JSONResponse({str(int(k)): scores[k] for k in top})
        return JSONResponse(scores)

    return Starlette(
        routes=[Route("/ping", ping, methods=["GET"]), Route("/predictions/{name}", predictions, methods=["POST"])]
    )


def custom_app(served: Served) -> Starlette:
    """A JSON API of its own: ``POST /api/classify`` with ``{"data": {"x": batch}}`` answers
    ``{"result": {"probs": [...]}}``; ``POST /api/flat`` takes ``{"values": flat, "dims": shape}`` and answers
    ``{"out": [{"data": flat scores}]}``; ``POST /api/one`` takes ``{"example": x}`` and answers ``{"label": k}``."""

    async def classify(request: Request) -> Response:
        refused = served.refused(request)
        if refused is not None:
            return refused
        return JSONResponse({"result": {"probs": served.answer(json.loads(await request.body())["data"]["x"])}})

    async def flat(request: Request) -> Response:
        body = json.loads(await request.body())
        x = np.asarray(body["values"], dtype=np.float64).reshape(body["dims"])
        return JSONResponse({"out": [{"data": np.asarray(served.answer(x)).ravel().tolist()}]})

    async def one(request: Request) -> Response:
        (scores,) = served.answer([json.loads(await request.body())["example"]])
        return JSONResponse({"label": int(np.argmax(scores))})

    return Starlette(
        routes=[
            Route("/api/classify", classify, methods=["POST"]),
            Route("/api/flat", flat, methods=["POST"]),
            Route("/api/one", one, methods=["POST"]),
        ]
    )


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
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
