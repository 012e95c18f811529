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
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab import validation
from advlab.oracles import BudgetExceeded, Oracle, TorchOracle

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 1024
"""Largest batch one request may carry."""
JSON_BYTES_PER_VALUE = 32
"""Generous size of one number in a JSON body, used to bound the body size before parsing it."""


class _RequestError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


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
        A ``starlette.applications.Starlette`` app (serve it with uvicorn, test it with ``TestClient``).

    Raises:
        ValueError: on a bad mode, limit or batch size.

    Example:
        >>> app = create_app(model, mode="labels", max_queries=10_000)
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
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
    if oracle.num_classes is None and oracle.input_shape is not None:
        with torch.no_grad():  # one local forward pass to learn the number of classes; not a query
            oracle._scores(torch.full((1, *oracle.input_shape), oracle.bounds[0]))
    lock = threading.Lock()
    max_body = max_batch * int(np.prod(oracle.input_shape or (1,))) * JSON_BYTES_PER_VALUE + 4096

    def describe() -> dict[str, Any]:
        return {
            "mode": oracle.mode,
            "num_classes": oracle.num_classes,
            "input_shape": list(oracle.input_shape) if oracle.input_shape is not None else None,
            "bounds": list(oracle.bounds),
            "queries": oracle.queries,
            "max_queries": oracle.budget,
            "max_batch": max_batch,
        }

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        return hmac.compare_digest(given.encode(), api_key.encode())

    def parse(body: bytes) -> torch.Tensor:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _RequestError(400, f"body is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise _RequestError(
                400, "body must be a JSON object with 'inputs' (nested lists) or 'inputs_b64' and 'shape'"
            )
        if "inputs_b64" in payload:
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
            if len(raw) != 4 * int(np.prod(shape)):
                need = 4 * int(np.prod(shape))
                raise _RequestError(400, f"'inputs_b64' holds {len(raw)} bytes but shape {shape} needs {need}")
            arr = np.frombuffer(raw, dtype="<f4").reshape(shape)
        elif "inputs" in payload:
            try:
                arr = np.asarray(payload["inputs"], dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise _RequestError(
                    400, f"'inputs' must be nested lists of numbers of one shape (N, ...): {exc}"
                ) from exc
            if arr.ndim >= 1 and arr.shape[0] > max_batch:
                raise _RequestError(413, f"batch of {arr.shape[0]} examples exceeds max_batch={max_batch}; split it")
        else:
            raise _RequestError(400, "body must have 'inputs' (nested lists) or 'inputs_b64' and 'shape'")
        if arr.ndim < 2 or arr.shape[0] == 0:
            raise _RequestError(422, f"inputs must be a non-empty batch of shape (N, ...), got shape {list(arr.shape)}")
        x = torch.from_numpy(arr.copy())
        try:
            validation.check_input_shape(x, oracle.input_shape, name="inputs")
            validation.check_input(x, oracle.bounds, name="inputs")
        except (ValueError, TypeError) as exc:
            raise _RequestError(422, str(exc)) from exc
        return x

    def evaluate(x: torch.Tensor) -> dict[str, Any]:
        with lock:
            if oracle.mode == "scores":
                scores = oracle.scores(x)
                return {"labels": scores.argmax(1).tolist(), "scores": scores.tolist(), "queries": oracle.queries}
            return {"labels": oracle.predict(x).tolist(), "queries": oracle.queries}

    async def info(request: Request) -> JSONResponse:
        if not authorised(request):
            return error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
        return JSONResponse(describe())

    async def predict(request: Request) -> JSONResponse:
        if not authorised(request):
            return error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            return error(413, f"request body of {length} bytes is too large for max_batch={max_batch}")
        body = await request.body()
        if len(body) > max_body:
            return error(413, f"request body of {len(body)} bytes is too large for max_batch={max_batch}")
        x = torch.empty(0)
        try:
            x = parse(body)
            return JSONResponse(await run_in_threadpool(evaluate, x))
        except _RequestError as exc:
            return error(exc.status, exc.message, **exc.extra)
        except BudgetExceeded as exc:
            return error(
                429,
                f"query limit reached: {exc.spent} of {exc.budget} used, {exc.requested} refused",
                queries=exc.spent,
                max_queries=exc.budget,
            )
        except (ValueError, TypeError) as exc:
            return error(422, str(exc))
        except RuntimeError as exc:
            if oracle.input_shape is None:  # no declared shape: a shape mismatch surfaces inside the model
                return error(422, f"the model cannot evaluate inputs of shape {list(x.shape)}: {exc}")
            log.exception("prediction failed")
            return error(500, "internal error while evaluating the model; see the server log")
        except Exception:  # never leak a traceback to the client; log it here
            log.exception("prediction failed")
            return error(500, "internal error while evaluating the model; see the server log")

    app = Starlette(routes=[Route("/info", info, methods=["GET"]), Route("/predict", predict, methods=["POST"])])
    app.state.oracle = oracle
    return app


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` under uvicorn until interrupted (blocking)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)
