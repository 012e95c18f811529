"""The HTTP client oracle: a model served by ``advlab serve`` (or any server speaking its protocol) as an Oracle.

Protocol (see :mod:`advlab.blackbox.server`): ``GET /info`` describes the target; ``POST /predict`` with
``{"inputs_b64": base64 float32, "shape": [N, ...]}`` (or ``{"inputs": nested lists}``) answers
``{"labels": [...]}`` and, in scores mode, ``{"scores": [[...]]}``. Connection errors and 5xx answers are
retried with exponential back-off; a 429 answer means the server's query limit is reached and becomes
:class:`~advlab.oracles.BudgetExceeded`.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import numpy as np
import torch

from advlab import validation
from advlab.oracles import (
    BudgetExceeded,
    Oracle,
    OracleResponseError,
    OracleUnavailable,
    check_labels_answer,
    check_mode,
    check_scores_answer,
)

log = logging.getLogger(__name__)


class HTTPOracle(Oracle):
    """A remote model behind HTTP, queried in batches with timeouts and retries.

    On creation it asks ``GET /info`` for the mode, number of classes, input shape, bounds and the server's
    query limit (that request costs no query). When the server has a limit, :meth:`remaining` accounts for it.

    Args:
        url: base address, e.g. ``"http://127.0.0.1:8000"``.
        mode: ``None`` to use the server's mode; ``"labels"`` works with any server; ``"scores"`` needs a
            scores server.
        budget: local limit on queries (examples sent), ``None`` for unlimited.
        api_key: sent as ``Authorization: Bearer KEY`` when given.
        timeout: seconds to wait for connecting and for each answer.
        retries: extra attempts after a connection error, a timeout or a 5xx answer.
        backoff: first wait between attempts in seconds; doubled after each failure.
        batch_size: examples per request (lowered to the server's ``max_batch``).
        transport: an ``httpx`` transport to use instead of the network (e.g. ``httpx.MockTransport`` in tests).

    Raises:
        OracleUnavailable: when the server cannot be reached after all attempts.
        OracleResponseError: when it answers something that is not the protocol.
        PermissionError: when the API key is missing or wrong (401/403).

    Examples:
        >>> oracle = HTTPOracle("http://127.0.0.1:8000", budget=10_000)
        >>> result = hopskipjump(as_module(oracle), x, y, ThreatModel("l2", 2.0))
    """

    def __init__(
        self,
        url: str,
        mode: str | None = None,
        budget: int | None = None,
        api_key: str | None = None,
        timeout: float = 10,
        retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 256,
        *,
        transport: Any = None,
    ) -> None:
        import httpx

        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url: expected an http:// or https:// address, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = validation.check_float("timeout", timeout, minimum=0.0, strict_min=True)
        self.retries = validation.check_int("retries", retries, minimum=0)
        self.backoff = validation.check_float("backoff", backoff, minimum=0.0)
        self.batch_size = validation.check_int("batch_size", batch_size, minimum=1)
        self._answered = 0
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout, transport=transport)
        info = self.info()
        server_mode = info["mode"]
        if mode is None:
            mode = server_mode
        mode = check_mode(mode)
        if mode == "scores" and server_mode != "scores":
            raise ValueError(
                f"mode: 'scores' was asked but the server at {self.url} answers only labels; use mode='labels' "
                "or mode=None"
            )
        bounds = info.get("bounds") or (0.0, 1.0)
        shape = info.get("input_shape")
        super().__init__(
            mode,
            int(info["num_classes"]),
            budget=budget,
            input_shape=tuple(shape) if shape else None,
            bounds=(float(bounds[0]), float(bounds[1])),
        )
        max_batch = info.get("max_batch")
        if isinstance(max_batch, int) and max_batch > 0:
            self.batch_size = min(self.batch_size, max_batch)
        limit, used = info.get("max_queries"), info.get("queries", 0)
        self.server_remaining: int | None = None if limit is None else max(0, int(limit) - int(used))

    # ------------------------------------------------------------------ transport
    def _request(self, method: str, path: str, body: bytes | None = None) -> Any:
        """Send one request with retries; return the decoded JSON of a 2xx answer."""
        import httpx

        attempt = 0
        while True:
            try:
                if method == "GET":
                    resp = self._client.get(path)
                else:
                    resp = self._client.post(path, content=body, headers={"Content-Type": "application/json"})
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                error: str = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 500:
                    return self._decode(resp, path)
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if attempt >= self.retries:
                raise OracleUnavailable(
                    f"target {self.url}{path} unreachable after {attempt + 1} attempt(s): {error}. Check that the "
                    "server is running (advlab serve --model DIR --port PORT) and the address is right."
                )
            wait = self.backoff * (2**attempt)
            log.warning("%s %s failed (%s); retrying in %.2f s", method, path, error, wait)
            time.sleep(wait)
            attempt += 1

    def _decode(self, resp: Any, path: str) -> Any:
        try:
            payload = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            payload = None
        message = payload.get("error") if isinstance(payload, dict) else None
        code = resp.status_code
        if code in (401, 403):
            raise PermissionError(f"{self.url}{path}: the server refused the API key (HTTP {code}): {message}")
        if code == 429:
            spent = payload.get("queries", self.queries) if isinstance(payload, dict) else self.queries
            limit = payload.get("max_queries") if isinstance(payload, dict) else None
            self.server_remaining = 0
            raise BudgetExceeded(
                int(spent),
                limit,
                0,
                f"the server {self.url} refused the batch: its query limit is reached ({message})",
            )
        if code >= 400:
            detail = message or resp.text[:200]
            raise ValueError(f"{self.url}{path}: the server rejected the request (HTTP {code}): {detail}")
        if payload is None:
            raise OracleResponseError(
                f"{self.url}{path}: the answer is not JSON (first bytes: {resp.text[:80]!r}); is this an advlab server?"
            )
        return payload

    def info(self) -> dict[str, Any]:
        """The server's description (``GET /info``); costs no query."""
        info = self._request("GET", "/info")
        if not isinstance(info, dict) or "mode" not in info or "num_classes" not in info:
            raise OracleResponseError(
                f"{self.url}/info: expected a JSON object with 'mode' and 'num_classes', got {str(info)[:120]}"
            )
        if info["mode"] not in ("labels", "scores") or not isinstance(info["num_classes"], int):
            raise OracleResponseError(f"{self.url}/info: invalid mode or num_classes in {str(info)[:120]}")
        return info

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HTTPOracle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ oracle
    def remaining(self) -> int | None:
        local = super().remaining()
        if self.server_remaining is None:
            return local
        return self.server_remaining if local is None else min(local, self.server_remaining)

    def _charge(self, n: int) -> None:
        if self.server_remaining is not None and n > self.server_remaining:
            raise BudgetExceeded(
                self.queries,
                self.budget,
                n,
                f"the server {self.url} has {self.server_remaining} queries left; a batch of {n} "
                "would exceed its limit",
            )
        super()._charge(n)

    def _post(self, x: torch.Tensor) -> dict[str, Any]:
        arr = np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32))
        body = json.dumps(
            {
                "inputs_b64": base64.b64encode(arr.tobytes()).decode("ascii"),
                "shape": list(arr.shape),
                "dtype": "float32",
            }
        ).encode()
        answer = self._request("POST", "/predict", body)
        if not isinstance(answer, dict):
            raise OracleResponseError(f"{self.url}/predict: expected a JSON object, got {str(answer)[:120]}")
        if self.server_remaining is not None:
            self.server_remaining = max(0, self.server_remaining - x.shape[0])
        self._answered += x.shape[0]
        return answer

    def _refund(self, n: int) -> None:
        # chunks the server already answered were spent; only the rest is given back
        super()._refund(n - self._answered)

    def _batches(self, x: torch.Tensor, key: str) -> list[torch.Tensor]:
        out = []
        self._answered = 0
        for i in range(0, x.shape[0], self.batch_size):
            chunk = x[i : i + self.batch_size]
            answer = self._post(chunk)
            if key not in answer:
                raise OracleResponseError(f"{self.url}/predict: the answer has no {key!r} (keys: {sorted(answer)[:6]})")
            try:
                value = torch.as_tensor(np.asarray(answer[key], dtype=np.float64))
            except (TypeError, ValueError) as exc:
                raise OracleResponseError(f"{self.url}/predict: {key!r} is not numeric") from exc
            out.append(
                value
                if key == "scores"
                else check_labels_answer(value, chunk.shape[0], self.num_classes, f"{self.url}/predict")
            )
            if key == "scores":
                out[-1] = check_scores_answer(value, chunk.shape[0], self.num_classes, f"{self.url}/predict")
        return out

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._batches(x, "labels"))

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._batches(x, "scores"))
