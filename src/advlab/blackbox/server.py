"""The HTTP prediction server behind ``advlab serve``: a Starlette app that answers queries about one model.

Endpoints:
    ``GET /info``: ``{"mode", "num_classes", "input_shape", "bounds", "queries", "max_queries", "max_batch"}``.
    ``POST /predict``: body ``{"inputs": nested lists of shape (N, ...)}`` or, faster,
    ``{"inputs_b64": base64 of little-endian float32, "shape": [N, ...]}``; answer ``{"labels": [...],
    "queries": used}`` plus ``"scores": [[...]]`` (class probabilities) in scores mode.

Every bad request gets a 4xx JSON answer ``{"error": message}``: 400 malformed JSON or fields, 401 missing or
wrong API key, 413 a batch larger than ``max_batch`` (or a body too large for it), 422 inputs of the wrong
shape or outside the bounds, 429 the query limit reached (no example of that batch is evaluated).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import validation
from advlab.models import predict
from advlab.oracles import BudgetExceeded, Oracle, TorchOracle

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 1024
"""Largest batch one request may carry."""
JSON_BYTES_PER_VALUE = 32
"""Generous size of one number in a JSON body, used to bound the body size before parsing it."""


class _RequestError(Exception):
    """A request the server refuses: its HTTP status and the message sent back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


UNAUTHORISED = "missing or wrong API key: send 'Authorization: Bearer KEY'"
BODY_FORMS = "'inputs' (nested lists) or 'inputs_b64' and 'shape'"


def create_app(
    model: nn.Module | Oracle,
    *,
    mode: str = "scores",
    max_queries: int | None = None,
    api_key: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    input_shape: tuple[int, ...] | None = None,
    bounds: tuple[float, float] | None = None,
) -> Any:
    """Build the Starlette app serving ``model``.

    Args:
        model: a ``torch.nn.Module``/``Classifier`` returning logits, or any :class:`Oracle`.
        mode: ``"scores"`` (probabilities and labels) or ``"labels"`` (labels only); ignored for an oracle,
            whose own mode is served.
        max_queries: total number of examples the server will evaluate, ``None`` for unlimited.
        api_key: when given, requests must carry ``Authorization: Bearer KEY`` (or ``X-API-Key: KEY``).
        max_batch: largest number of examples in one request (larger ones get 413).
        input_shape: per-example shape; taken from the model when omitted (required to check requests).
        bounds: valid input range; taken from the model when omitted.

    Returns:
        A ``starlette.applications.Starlette`` app (serve it with uvicorn, test it with ``TestClient``); its
        ``state.oracle`` is the served oracle.

    Raises:
        ValueError: on a bad mode, limit or batch size.

    Examples:
        >>> app = create_app(model, mode="labels", max_queries=10_000)
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    from starlette.applications import Starlette
    from starlette.routing import Route

    max_batch = validation.check_int("max_batch", max_batch, minimum=1)
    if isinstance(model, Oracle):
        if max_queries is not None:
            raise ValueError("max_queries: give the limit as the oracle's budget when serving an Oracle")
        oracle = model
    else:
        oracle = TorchOracle(model, mode=mode, budget=max_queries, input_shape=input_shape, bounds=bounds)
    if input_shape is not None:
        oracle.input_shape = tuple(int(s) for s in input_shape)
    _learn_num_classes(oracle)
    server = PredictionServer(oracle, api_key=api_key, max_batch=max_batch)
    app = Starlette(
        routes=[Route("/info", server.info, methods=["GET"]), Route("/predict", server.predict, methods=["POST"])]
    )
    app.state.oracle = oracle
    return app


def _learn_num_classes(oracle: Oracle) -> None:
    """A local model's number of classes from one forward pass (not a query) when nothing declares it."""
    if oracle.num_classes is not None or oracle.input_shape is None or not isinstance(oracle, TorchOracle):
        return
    probe = torch.full((1, *oracle.input_shape), oracle.bounds[0])
    with oracle.model.attack_mode(warn_train_mode=False):
        logits = predict(oracle.model, probe, logits=True)
    validation.check_model_output(logits, 1)
    oracle.num_classes = int(logits.shape[1])


class PredictionServer:
    """The request handlers of ``advlab serve`` around one oracle and its limits.

    Args:
        oracle: the served model; its budget is the server's query limit.
        api_key: the key requests must carry, ``None`` for none.
        max_batch: largest number of examples in one request.
    """

    def __init__(self, oracle: Oracle, *, api_key: str | None = None, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.oracle = oracle
        self.api_key = api_key
        self.max_batch = max_batch
        self.max_body = max_batch * int(np.prod(oracle.input_shape or (1,))) * JSON_BYTES_PER_VALUE + 4096
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ endpoints
    async def info(self, request: Any) -> Any:
        """``GET /info``: the target's description (no query)."""
        if not self.authorised(request.headers):
            return _error(401, UNAUTHORISED)
        return _json(self.describe())

    async def predict(self, request: Any) -> Any:
        """``POST /predict``: labels (and scores) of a batch, or a 4xx answer saying what is wrong."""
        from starlette.concurrency import run_in_threadpool

        if not self.authorised(request.headers):
            return _error(401, UNAUTHORISED)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return _error(413, f"request body of {length} bytes is too large for max_batch={self.max_batch}")
        body = await request.body()
        if len(body) > self.max_body:
            return _error(413, f"request body of {len(body)} bytes is too large for max_batch={self.max_batch}")
        x = torch.empty(0)
        try:
            x = self.parse(body)
            return _json(await run_in_threadpool(self.evaluate, x))
        except Exception as exc:
            return self.failure(exc, x)

    # ------------------------------------------------------------------ steps of a request
    def describe(self) -> dict[str, Any]:
        oracle = self.oracle
        return {
            "mode": oracle.mode,
            "num_classes": oracle.num_classes,
            "input_shape": list(oracle.input_shape) if oracle.input_shape is not None else None,
            "bounds": list(oracle.bounds),
            "queries": oracle.queries,
            "max_queries": oracle.budget,
            "max_batch": self.max_batch,
        }

    def authorised(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries the API key (always, when the server has none)."""
        if self.api_key is None:
            return True
        header = headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else headers.get("x-api-key", "")
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def parse(self, body: bytes) -> torch.Tensor:
        """The batch of a request body, checked against the oracle's shape and bounds.

        Raises:
            _RequestError: 400 malformed, 413 too large a batch, 422 wrong shape or values.
        """
        payload = _load_json(body)
        if "inputs_b64" in payload:
            arr = _decode_b64(payload, self.max_batch)
        elif "inputs" in payload:
            arr = _decode_lists(payload["inputs"], self.max_batch)
        else:
            raise _RequestError(400, f"body must have {BODY_FORMS}")
        if arr.ndim < 2 or arr.shape[0] == 0:
            raise _RequestError(422, f"inputs must be a non-empty batch of shape (N, ...), got shape {list(arr.shape)}")
        x = torch.from_numpy(arr.copy())
        try:
            validation.check_input_shape(x, self.oracle.input_shape, name="inputs")
            validation.check_input(x, self.oracle.bounds, name="inputs")
        except (ValueError, TypeError) as exc:
            raise _RequestError(422, str(exc)) from exc
        return x

    def evaluate(self, x: torch.Tensor) -> dict[str, Any]:
        """The answer to a valid batch (one request at a time, so the query count is exact)."""
        with self.lock:
            if self.oracle.mode == "scores":
                scores = self.oracle.scores(x)
                return {"labels": scores.argmax(1).tolist(), "scores": scores.tolist(), "queries": self.oracle.queries}
            return {"labels": self.oracle.predict(x).tolist(), "queries": self.oracle.queries}

    def failure(self, exc: Exception, x: torch.Tensor) -> Any:
        """The JSON error answer to a request that failed with ``exc`` (never a traceback; 500s are logged)."""
        if isinstance(exc, _RequestError):
            return _error(exc.status, exc.message)
        if isinstance(exc, BudgetExceeded):
            return _error(
                429,
                f"query limit reached: {exc.spent} of {exc.budget} used, {exc.requested} refused",
                queries=exc.spent,
                max_queries=exc.budget,
            )
        if isinstance(exc, (ValueError, TypeError)):
            return _error(422, str(exc))
        if isinstance(exc, RuntimeError) and self.oracle.input_shape is None:
            # no declared shape: a shape mismatch surfaces inside the model
            return _error(422, f"the model cannot evaluate inputs of shape {list(x.shape)}: {exc}")
        log.error("prediction failed", exc_info=exc)
        return _error(500, "internal error while evaluating the model; see the server log")


def _load_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _RequestError(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise _RequestError(400, f"body must be a JSON object with {BODY_FORMS}")
    return payload


def _decode_b64(payload: dict[str, Any], max_batch: int) -> np.ndarray:
    """``{"inputs_b64": base64 of little-endian float32, "shape": [N, ...]}`` as an array."""
    shape = payload.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise _RequestError(400, "'shape' must be a list of non-negative ints, e.g. [N, 1, 28, 28]")
    if payload.get("dtype", "float32") != "float32":
        raise _RequestError(400, "'dtype' must be 'float32'")
    if shape[0] > max_batch:
        raise _RequestError(413, f"batch of {shape[0]} examples exceeds max_batch={max_batch}; split it")
    try:
        raw = base64.b64decode(payload["inputs_b64"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise _RequestError(400, f"'inputs_b64' is not valid base64: {exc}") from exc
    need = 4 * int(np.prod(shape))
    if len(raw) != need:
        raise _RequestError(400, f"'inputs_b64' holds {len(raw)} bytes but shape {shape} needs {need}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape)


def _decode_lists(inputs: Any, max_batch: int) -> np.ndarray:
    """``{"inputs": nested lists of shape (N, ...)}`` as an array."""
    try:
        arr = np.asarray(inputs, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise _RequestError(400, f"'inputs' must be nested lists of numbers of one shape (N, ...): {exc}") from exc
    if arr.ndim >= 1 and arr.shape[0] > max_batch:
        raise _RequestError(413, f"batch of {arr.shape[0]} examples exceeds max_batch={max_batch}; split it")
    return arr


def _json(content: dict[str, Any], status: int = 200) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(content, status_code=status)


def _error(status: int, message: str, **extra: Any) -> Any:
    return _json({"error": message, **extra}, status)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` under uvicorn until interrupted (blocking)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)
