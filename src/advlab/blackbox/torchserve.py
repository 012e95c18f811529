"""TorchServe's inference API as an oracle: one ``POST /predictions/NAME`` per example, sent concurrently.

Protocol (TorchServe "Inference API", https://pytorch.org/serve/inference_api.html):

- ``GET /ping`` answers ``{"status": "Healthy"}`` when the server runs (no metadata endpoint describes a model:
  the number of classes, input shape and bounds are given by the caller).
- ``POST /predictions/NAME[/VERSION]`` runs the model's handler on the request body and answers what the handler
  returns. TorchServe batches requests on the server (``batchSize`` / ``maxBatchDelay``), one request per example,
  so the oracle sends each example as its own request, ``concurrency`` at a time. The body is the example as a JSON
  nested list (a handler reads it with ``torch.as_tensor(row.get("data") or row.get("body"))``).
- The answer for one example is a label (a number), class scores (a list), or a mapping from class index to
  probability (``{"0": 0.1, "7": 0.9}``; in labels mode the top-k mapping of TorchServe's classifiers is enough).
- Errors are ``{"code", "type", "message"}`` with an HTTP error status. With token authorization on, requests
  carry ``Authorization: Bearer KEY`` (give it with a header).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from advlab import validation
from advlab.blackbox.remote import RemoteOracle, fetch_description, mismatch, served_model
from advlab.blackbox.transport import HTTPTransport
from advlab.oracles import OracleResponseError

URL_PATH = r"/predictions/(?P<model>[^/]+)(?:/(?P<version>[^/]+))?"
"""A TorchServe prediction URL's path, e.g. ``/predictions/mnist/1.0``."""


class TorchServeOracle(RemoteOracle):
    """A model behind TorchServe's inference API, as an oracle.

    Args:
        url: the inference address (``http://host:8080``) or the prediction URL (``http://host:8080/predictions/
            mnist``, which names the model and its version).
        model: the model's name, unless the URL names it.
        version: a model version (default: the server's default version).
        mode: ``"labels"`` or ``"scores"`` (``None``: scores unless ``output="labels"``).
        output: what the handler answers: ``"auto"`` (told from the first answer), ``"probabilities"``,
            ``"logits"`` or ``"labels"``.
        num_classes: number of classes (required for labels; learned from the first answer of scores).
        input_shape: per-example shape (NCHW), ``None`` for any.
        bounds: valid input range.
        budget: maximum number of examples evaluated, ``None`` for unlimited.
        concurrency: requests in flight at once (one example each).
        layout: ``"nhwc"`` when the handler takes channels last; attacks stay NCHW.
        headers: request headers, e.g. TorchServe's inference token (see
            :func:`advlab.blackbox.transport.request_headers`); never logged.
        timeout: seconds to wait for connecting and for each answer.
        retries: extra attempts after a connection error, a timeout, a 5xx or a 429 answer.
        backoff: first wait between attempts in seconds; doubled after each failure.
        transport: an ``httpx`` transport instead of the network (tests).

    Raises:
        ProtocolMismatch: ``GET /ping`` does not answer TorchServe's JSON (the message lists the protocols).
        ValueError: no model name, labels without a number of classes.

    Examples:
        >>> oracle = TorchServeOracle("http://127.0.0.1:8080", model="mnist", num_classes=10, budget=5000)
        >>> labels = oracle.predict(x)
    """

    protocol = "torchserve"

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        version: str | None = None,
        mode: str | None = None,
        output: str = "auto",
        num_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        budget: int | None = None,
        concurrency: int = 8,
        layout: str = "nchw",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10,
        retries: int = 3,
        backoff: float = 0.5,
        transport: Any = None,
    ) -> None:
        base, model, version = served_model(url, URL_PATH, model, version, "/predictions")
        http = HTTPTransport(
            base, headers=headers, timeout=timeout, retries=retries, backoff=backoff, transport=transport
        )
        ping = fetch_description(base, http, "/ping", "torchserve")
        if not ({"status", "health"} & set(ping)):
            raise mismatch(base, "torchserve", f"GET /ping answered {str(ping)[:60]}, without 'status'")
        self.path = f"/predictions/{model}" + (f"/{version}" if version else "")
        self.version = version
        self.concurrency = validation.check_int("concurrency", concurrency, minimum=1)
        super().__init__(
            http,
            model=model,
            output=output,
            mode=mode,
            num_classes=num_classes,
            input_shape=input_shape,
            bounds=bounds,
            budget=budget,
            batch_size=self.concurrency,
            layout=layout,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "version": self.version}

    def _send(self, x: torch.Tensor) -> Any:
        examples = x.detach().cpu().numpy().astype(np.float32).tolist()
        if len(examples) == 1:
            return [self._one(examples[0])]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(examples))) as pool:
            return list(pool.map(self._one, examples))

    def _one(self, example: Any) -> Any:
        """One example's answer: a label, a list of scores, or scores from a class-to-probability mapping."""
        answer = self.http.post(self.path, example)
        if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], (list, dict)):
            answer = answer[0]  # a handler that returns a one-item list per request
        if isinstance(answer, dict):
            return self._from_mapping(answer)
        return answer

    def _from_mapping(self, answer: Mapping[str, Any]) -> Any:
        try:
            scores = {int(k): float(v) for k, v in answer.items()}
        except (TypeError, ValueError) as exc:
            raise OracleResponseError(
                f"{self.source}: the answer {str(answer)[:80]} does not map class indices to scores; describe it "
                "with --protocol template and --response-path"
            ) from exc
        if self.output == "labels" or self.mode == "labels":
            return max(scores, key=lambda k: scores[k])
        k = self.num_classes
        if k is None or set(scores) != set(range(k)):
            raise OracleResponseError(
                f"{self.source}: the answer covers classes {sorted(scores)[:10]}, not all {k}; scores mode needs "
                "every class (or use mode='labels')"
            )
        return [scores[i] for i in range(k)]
