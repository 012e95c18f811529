"""The HTTP client oracle: a model served by ``advlab serve`` (or any server speaking its protocol) as an Oracle.

Protocol (see :mod:`advlab.blackbox.server`): ``GET /info`` describes the target; ``POST /predict`` with
``{"inputs_b64": base64 float32, "shape": [N, ...]}`` (or ``{"inputs": nested lists}``) answers
``{"labels": [...]}`` and, in scores mode, ``{"scores": [[...]]}``. Connection errors and 5xx answers are
retried with exponential back-off; a 429 answer means the server's query limit is reached and becomes
:class:`~advlab.oracles.BudgetExceeded`. Models behind other serving stacks have their own adapters
(:func:`advlab.blackbox.connect`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from advlab.blackbox.remote import RemoteOracle, fetch_description, mismatch
from advlab.blackbox.transport import HTTPTransport, QueryLimitReached
from advlab.oracles import BudgetExceeded, OracleResponseError, check_mode

UNREACHABLE_HINT = "Check that the server is running (advlab serve --model DIR --port PORT) and the address is right."


class HTTPOracle(RemoteOracle):
    """A model served by ``advlab serve``, queried in batches with timeouts and retries.

    On creation it asks ``GET /info`` for the mode, number of classes, input shape, bounds and the server's
    query limit (that request costs no query). When the server has a limit, :meth:`remaining` accounts for it.
    A server that does not answer ``/info`` gets a one-line error listing the protocols advlab speaks
    (:func:`advlab.blackbox.connect` picks another one).

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
        headers: more request headers (see :func:`advlab.blackbox.transport.request_headers`); never logged.
        transport: an ``httpx`` transport to use instead of the network (e.g. ``httpx.MockTransport`` in tests).

    Raises:
        OracleUnavailable: when the server cannot be reached after all attempts.
        ProtocolMismatch: when ``/info`` is missing or is not advlab's (the message lists the other protocols).
        OracleResponseError: when it answers something that is not the protocol.
        PermissionError: when the API key is missing or wrong (401/403).

    Examples:
        >>> oracle = HTTPOracle("http://127.0.0.1:8000", budget=10_000)
        >>> result = hopskipjump(as_module(oracle), x, y, ThreatModel("l2", 2.0))
    """

    protocol = "advlab"

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
        headers: Mapping[str, str] | None = None,
        transport: Any = None,
    ) -> None:
        sent = {**(headers or {}), **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        http = HTTPTransport(
            url,
            headers=sent,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            limit_429=True,
            unreachable_hint=UNREACHABLE_HINT,
            transport=transport,
        )
        info = self._info(http)
        server_mode = info["mode"]
        mode = server_mode if mode is None else check_mode(mode)
        if mode == "scores" and server_mode != "scores":
            raise ValueError(
                f"mode: 'scores' was asked but the server at {http.url} answers only labels; use mode='labels' "
                "or mode=None"
            )
        bounds = info.get("bounds") or (0.0, 1.0)
        shape = info.get("input_shape")
        super().__init__(
            http,
            model=None,
            output="probabilities" if mode == "scores" else "labels",
            mode=mode,
            num_classes=int(info["num_classes"]),
            input_shape=tuple(shape) if shape else None,
            bounds=(float(bounds[0]), float(bounds[1])),
            budget=budget,
            batch_size=batch_size,
        )
        max_batch = info.get("max_batch")
        if isinstance(max_batch, int) and max_batch > 0:
            self.batch_size = min(self.batch_size, max_batch)
        limit, used = info.get("max_queries"), info.get("queries", 0)
        self.server_remaining: int | None = None if limit is None else max(0, int(limit) - int(used))

    @staticmethod
    def _info(http: HTTPTransport) -> dict[str, Any]:
        info = fetch_description(http.url, http, "/info", "advlab")
        if "mode" not in info or "num_classes" not in info:
            raise mismatch(
                http.url, "advlab", f"GET /info answered an object without 'mode' and 'num_classes': {str(info)[:80]}"
            )
        if info["mode"] not in ("labels", "scores") or not isinstance(info["num_classes"], int):
            raise OracleResponseError(f"{http.url}/info: invalid mode or num_classes in {str(info)[:120]}")
        return info

    def info(self) -> dict[str, Any]:
        """The server's description (``GET /info``); costs no query."""
        return self._info(self.http)

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

    def _send(self, x: torch.Tensor) -> Any:
        arr = np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32))
        body = {
            "inputs_b64": base64.b64encode(arr.tobytes()).decode("ascii"),
            "shape": list(arr.shape),
            "dtype": "float32",
        }
        try:
            answer = self.http.post("/predict", body)
        except QueryLimitReached as exc:
            payload = exc.payload if isinstance(exc.payload, dict) else {}
            self.server_remaining = 0
            raise BudgetExceeded(
                int(payload.get("queries", self.queries)),
                payload.get("max_queries"),
                0,
                f"the server {self.url} refused the batch: its query limit is reached ({exc})",
            ) from None
        if not isinstance(answer, dict):
            raise OracleResponseError(f"{self.url}/predict: expected a JSON object, got {str(answer)[:120]}")
        if self.server_remaining is not None:
            self.server_remaining = max(0, self.server_remaining - x.shape[0])
        key = "labels" if self.output == "labels" else "scores"
        if key not in answer:
            raise OracleResponseError(f"{self.url}/predict: the answer has no {key!r} (keys: {sorted(answer)[:6]})")
        return answer[key]
