"""Any JSON prediction API as an oracle: a request template with a placeholder for the inputs, a path to the answer.

The request is the template (JSON) with its placeholders filled in; a placeholder is a whole JSON string value:

- ``"{{inputs}}"``: the batch as nested lists, shape ``(n, ...)`` (one request per batch);
- ``"{{inputs_flat}}"``: the batch flattened row-major (with ``"{{shape}}"``, the batch's shape, next to it);
- ``"{{input}}"``: one example as nested lists (one request per example, as TorchServe-like APIs expect);
- ``"{{batch_size}}"``: the number of examples in the request.

The response path says where the answer's numbers are: dotted keys and list indices (``outputs.0.data``,
``predictions``), ``*`` for every item of a list (``results.*.label``); the JSONPath spellings ``$.outputs[0].data``
and ``results[*].label`` mean the same. Numbers found there are labels (one per example) or scores (a row per
example, or flat data of ``n * C`` numbers).

Examples:
    KServe v1 (``{"instances": ...}`` to ``{"predictions": ...}``): ``request_template='{"instances": "{{inputs}}"}'``,
    ``response_path="predictions"``; a v2-like API: ``'{"inputs": [{"name": "x", "shape": "{{shape}}", "datatype":
    "FP32", "data": "{{inputs_flat}}"}]}'`` with ``"outputs.0.data"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch

from advlab.blackbox.remote import RemoteOracle, mismatch
from advlab.blackbox.transport import EndpointNotFound, HTTPTransport
from advlab.oracles import OracleResponseError

BATCH_PLACEHOLDERS = ("{{inputs}}", "{{inputs_flat}}", "{{input}}")
"""Placeholders that carry the inputs; a template holds exactly one of them."""
PLACEHOLDERS = (*BATCH_PLACEHOLDERS, "{{shape}}", "{{batch_size}}")


def parse_template(template: str | Mapping[str, Any] | list[Any]) -> Any:
    """The request template as JSON, checked to hold exactly one inputs placeholder.

    Raises:
        ValueError: text that is not JSON, or not exactly one of ``{{inputs}}``, ``{{inputs_flat}}``, ``{{input}}``.
    """
    if isinstance(template, str):
        try:
            template = json.loads(template)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"request_template: not JSON ({exc.msg} at character {exc.pos}); placeholders are JSON strings, "
                'e.g. \'{"instances": "{{inputs}}"}\''
            ) from None
    found = [p for p in BATCH_PLACEHOLDERS if p in _strings(template)]
    if len(found) != 1:
        raise ValueError(
            f"request_template: expected exactly one of {', '.join(BATCH_PLACEHOLDERS)} as a JSON string value, "
            f'found {found or "none"}; e.g. \'{{"instances": "{{{{inputs}}}}"}}\''
        )
    return template


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else []
    return [s for item in items for s in _strings(item)]


def fill(template: Any, values: Mapping[str, Any]) -> Any:
    """The template with every string value that is a placeholder replaced by its value."""
    if isinstance(template, str):
        return values.get(template, template)
    if isinstance(template, Mapping):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    return template


def parse_path(path: str) -> list[str]:
    """The steps of a response path: ``"$.outputs[0].data"`` and ``"outputs.0.data"`` give ``["outputs", "0",
    "data"]``.

    Raises:
        ValueError: an empty path.
    """
    text = re.sub(r"\[\s*['\"]?([^\]'\"]+)['\"]?\s*\]", r".\1", str(path).strip())
    steps = [s for s in text.split(".") if s and s != "$"]
    if not steps:
        raise ValueError("response_path: expected a path such as 'predictions' or 'outputs.0.data'")
    return steps


def follow(answer: Any, steps: list[str], where: str) -> Any:
    """The value at ``steps`` in a decoded JSON answer (``*`` maps the rest of the path over a list).

    Raises:
        OracleResponseError: naming the first step that is not there and what is there instead.
    """
    value = answer
    for i, step in enumerate(steps):
        at = ".".join(steps[:i]) or "the answer"
        if step == "*":
            if not isinstance(value, list):
                raise OracleResponseError(f"{where}: '*' needs a list at {at}, got {type(value).__name__}")
            return [follow(v, steps[i + 1 :], where) for v in value]
        if isinstance(value, list) and re.fullmatch(r"-?\d+", step) and -len(value) <= int(step) < len(value):
            value = value[int(step)]
        elif isinstance(value, dict) and step in value:
            value = value[step]
        else:
            there = sorted(value)[:8] if isinstance(value, dict) else f"a {type(value).__name__}"
            if isinstance(value, list):
                there = f"a list of {len(value)}"
            raise OracleResponseError(f"{where}: the response path has no {step!r} at {at} (found {there})")
    return value


class TemplateOracle(RemoteOracle):
    """Any JSON API as an oracle, described by a request template and a response path.

    Args:
        url: the address requests are posted to (``https://api.example.com/v1/classify``).
        request_template: the request body, JSON text or a dict, with one inputs placeholder (see the module).
        response_path: where the numbers are in the answer (``"predictions"``, ``"outputs.0.data"``).
        mode: ``"labels"`` or ``"scores"`` (``None``: scores unless ``output="labels"``).
        output: what the API answers: ``"auto"`` (told from the first answer), ``"probabilities"``, ``"logits"``
            or ``"labels"``.
        num_classes: number of classes (required for labels; learned from the first answer of scores).
        input_shape: per-example shape (NCHW), ``None`` for any.
        bounds: valid input range.
        budget: maximum number of examples evaluated, ``None`` for unlimited.
        batch_size: examples per request (one per request with ``{{input}}``).
        layout: ``"nhwc"`` when the API takes channels last; attacks stay NCHW.
        headers: request headers (see :func:`advlab.blackbox.transport.request_headers`); never logged.
        timeout: seconds to wait for connecting and for each answer.
        retries: extra attempts after a connection error, a timeout, a 5xx or a 429 answer.
        backoff: first wait between attempts in seconds; doubled after each failure.
        transport: an ``httpx`` transport instead of the network (tests).

    Raises:
        ValueError: a template without exactly one inputs placeholder, an empty path, labels without classes.

    Examples:
        >>> oracle = TemplateOracle("http://127.0.0.1:9000/classify", '{"data": {"x": "{{inputs}}"}}',
        ...                         "result.probs", num_classes=10)
    """

    protocol = "template"

    def __init__(
        self,
        url: str,
        request_template: str | Mapping[str, Any] | list[Any],
        response_path: str,
        *,
        mode: str | None = None,
        output: str = "auto",
        num_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        budget: int | None = None,
        batch_size: int = 256,
        layout: str = "nchw",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10,
        retries: int = 3,
        backoff: float = 0.5,
        transport: Any = None,
    ) -> None:
        self.template = parse_template(request_template)
        self.steps = parse_path(response_path)
        self.response_path = response_path
        self.per_example = "{{input}}" in _strings(self.template)
        parts = urlsplit(url)
        self.endpoint = url
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        http = HTTPTransport(
            f"{parts.scheme}://{parts.netloc}",
            headers=headers,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            transport=transport,
        )
        super().__init__(
            http,
            model=None,
            output=output,
            mode=mode,
            num_classes=num_classes,
            input_shape=input_shape,
            bounds=bounds,
            budget=budget,
            batch_size=batch_size,
            layout=layout,
        )

    @property
    def source(self) -> str:
        return f"{self.endpoint} (template)"

    def describe(self) -> dict[str, Any]:
        template = json.dumps(self.template, sort_keys=True)
        return {**super().describe(), "url": self.endpoint, "template": template, "response_path": self.response_path}

    def _send(self, x: torch.Tensor) -> Any:
        arr = x.detach().cpu().numpy().astype(np.float32)
        if self.per_example:
            shape = list(arr.shape[1:])
            return [self._post({"{{input}}": e, "{{shape}}": shape, "{{batch_size}}": 1}) for e in arr.tolist()]
        values = {
            "{{inputs}}": arr.tolist(),
            "{{inputs_flat}}": arr.ravel().tolist(),
            "{{shape}}": list(arr.shape),
            "{{batch_size}}": int(arr.shape[0]),
        }
        found, n = self._post(values), arr.shape[0]
        flat = isinstance(found, list) and bool(found) and not isinstance(found[0], (list, dict))
        if flat and n and len(found) != n and len(found) % n == 0:
            return np.asarray(found, dtype=np.float64).reshape(n, -1)  # flat scores: n * C numbers
        return found

    def _post(self, values: Mapping[str, Any]) -> Any:
        try:
            answer = self.http.post(self.path, fill(self.template, values))
        except EndpointNotFound:
            raise mismatch(self.endpoint, "template", f"POST {self.path} answered HTTP 404") from None
        return follow(answer, self.steps, self.source)
