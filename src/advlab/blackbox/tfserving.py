"""TensorFlow Serving's REST API as an oracle: ``instances`` in, ``predictions`` out, the signature read from metadata.

Protocol (TensorFlow Serving, "RESTful API", https://www.tensorflow.org/tfx/serving/api_rest):

- ``GET /v1/models/NAME[/versions/V]/metadata`` answers a ``GetModelMetadataResponse`` in JSON:
  ``{"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {"serving_default": {"inputs": {NAME:
  {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "784"}]}}}, "outputs": {...}}}}}}``
  (sizes are strings, -1 for the batch; OpenVINO's server writes ``signatureDef`` / ``tensorShape``).
- ``POST /v1/models/NAME[/versions/V]:predict`` with the row format ``{"signature_name": S, "instances": [...]}``
  answers ``{"predictions": [...]}``: one value or list per instance, or, for a signature with several outputs,
  one object per instance mapping output names to values.
- Errors are ``{"error": message}`` with an HTTP error status.

The signature's single input gives the input shape (its dimensions after the batch) and dtype; the chosen output
(the only one, or ``output_name``) gives the number of classes (its last dimension) and whether the model answers
labels (an integer dtype, or no class dimension) or scores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from advlab.blackbox.remote import RemoteOracle, check_input_dtype, fetch_description, mismatch, served_model
from advlab.blackbox.transport import HTTPTransport
from advlab.oracles import OracleResponseError

URL_PATH = r"/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
"""A TF-Serving model URL's path, e.g. ``/v1/models/mnist/versions/2:predict``."""
DEFAULT_SIGNATURE = "serving_default"


def tensor_dims(spec: Mapping[str, Any]) -> list[int] | None:
    """The sizes of a TensorInfo's ``tensor_shape`` (``-1`` where unknown), ``None`` for an unknown rank."""
    shape = spec.get("tensor_shape", spec.get("tensorShape")) or {}
    if shape.get("unknown_rank", shape.get("unknownRank")):
        return None
    return [int(d.get("size", -1)) for d in shape.get("dim", [])]


def signature_of(metadata: Mapping[str, Any], name: str | None, where: str) -> tuple[str, dict[str, Any]]:
    """``(signature name, SignatureDef)`` from a metadata answer: ``name``, else ``serving_default``, else the
    only one.

    Raises:
        ValueError: the signature is missing (the message lists those there are).
    """
    defs = (metadata.get("metadata") or {}).get("signature_def") or {}
    defs = defs.get("signature_def", defs.get("signatureDef", {}))
    if not isinstance(defs, dict) or not defs:
        raise mismatch(where, "tfserving", "the metadata answer has no signature_def")
    if name is None:
        name = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in defs or len(defs) > 1 else next(iter(defs))
    if name not in defs:
        raise ValueError(f"signature: the model has no signature {name!r}; it has {', '.join(defs)} (--signature)")
    return name, defs[name]


def pick(tensors: Mapping[str, Any], name: str | None, what: str, option: str) -> tuple[str, dict[str, Any]]:
    """The tensor ``name`` of a signature's inputs or outputs, or the only one."""
    if name is not None:
        if name not in tensors:
            raise ValueError(f"{option}: the signature has no {what} {name!r}; it has {', '.join(tensors)}")
        return name, tensors[name]
    if len(tensors) != 1:
        raise ValueError(
            f"{option}: the signature has {len(tensors)} {what}s ({', '.join(tensors)}); name the one to use "
            f"({option} NAME)" + (" or use --protocol template" if what == "input" else "")
        )
    return next(iter(tensors.items()))


def output_kind(dtype: str, dims: list[int] | None) -> tuple[str, int | None]:
    """``(output, num_classes)`` from an output's dtype and dimensions: integers or no class axis are labels."""
    if re.search(r"INT", dtype.upper()):
        return "labels", None
    if dims is None or len(dims) < 2:
        return "auto", None
    classes = dims[-1]
    return ("labels", None) if classes == 1 else ("auto", classes if classes > 1 else None)


def chw_shape(dims: list[int] | None, layout: str) -> tuple[int, ...] | None:
    """The per-example input shape as attacks see it (NCHW) from the server's dimensions (batch first)."""
    if dims is None or len(dims) < 2 or any(d < 1 for d in dims[1:]):
        return None
    shape = tuple(dims[1:])
    if layout == "nhwc" and len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    return shape


class TFServingOracle(RemoteOracle):
    """A model behind TensorFlow Serving's REST API (or a server speaking it), as an oracle.

    Args:
        url: the server (``http://host:8501``) or the model's URL (``http://host:8501/v1/models/mnist``, which
            names the model and its version).
        model: the served model's name (``--model_name`` of the server), unless the URL names it.
        version: a model version (default: the server's latest).
        signature: the signature (default ``serving_default``, or the only one).
        output_name: the output to read when the signature has several.
        mode: ``"labels"`` or ``"scores"`` (``None``: scores unless the model answers labels).
        output: what the model answers (``"auto"``: from its dtype and shape, then the first answer).
        num_classes: number of classes when the metadata does not say.
        input_shape: per-example shape (NCHW) when the metadata does not say.
        bounds: valid input range (TF-Serving does not publish it).
        budget: maximum number of examples evaluated, ``None`` for unlimited.
        batch_size: examples per request.
        layout: ``"nhwc"`` when the model takes channels last (most Keras image models); attacks stay NCHW.
        headers: request headers (see :func:`advlab.blackbox.transport.request_headers`); never logged.
        timeout: seconds to wait for connecting and for each answer.
        retries: extra attempts after a connection error, a timeout, a 5xx or a 429 answer.
        backoff: first wait between attempts in seconds; doubled after each failure.
        transport: an ``httpx`` transport instead of the network (tests).

    Raises:
        ProtocolMismatch: the metadata endpoint does not answer TF-Serving's JSON (the message lists the protocols).
        ValueError: no model name, an unknown model, signature or output, a signature with several inputs, a
            non-float input.

    Examples:
        >>> oracle = TFServingOracle("http://127.0.0.1:8501", model="mnist", budget=20_000)
        >>> report = advlab.evaluate(oracle, (x, y), 0.1, attacks=["square"])
    """

    protocol = "tfserving"

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        version: str | None = None,
        signature: str | None = None,
        output_name: str | None = None,
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
        base, model, version = served_model(url, URL_PATH, model, version, "/v1/models")
        http = HTTPTransport(
            base, headers=headers, timeout=timeout, retries=retries, backoff=backoff, transport=transport
        )
        self.path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "")
        self.version = version
        metadata = fetch_description(base, http, self.path + "/metadata", "tfserving")
        self.signature, sig = signature_of(metadata, signature, base)
        self.input_name, spec = pick(sig.get("inputs") or {}, None, "input", "--input-name")
        check_input_dtype(str(spec.get("dtype", "DT_FLOAT")), f"{base}{self.path}")
        self.output_key, out = pick(sig.get("outputs") or {}, output_name, "output", "--output-name")
        self.multi_output = len(sig.get("outputs") or {}) > 1
        declared, classes = output_kind(str(out.get("dtype", "DT_FLOAT")), tensor_dims(out))
        super().__init__(
            http,
            model=model,
            output=declared if output == "auto" else output,
            mode=mode,
            num_classes=num_classes if num_classes is not None else classes,
            input_shape=input_shape if input_shape is not None else chw_shape(tensor_dims(spec), layout),
            bounds=bounds,
            budget=budget,
            batch_size=batch_size,
            layout=layout,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "version": self.version, "signature": self.signature, "output": self.output_key}

    def _send(self, x: torch.Tensor) -> Any:
        body: dict[str, Any] = {"instances": x.detach().cpu().numpy().astype(np.float32).tolist()}
        if self.signature != DEFAULT_SIGNATURE:
            body["signature_name"] = self.signature
        answer = self.http.post(self.path + ":predict", body)
        if not isinstance(answer, dict) or "predictions" not in answer:
            raise OracleResponseError(
                f"{self.url}{self.path}:predict: expected {{'predictions': [...]}}, got {str(answer)[:100]}"
            )
        predictions = answer["predictions"]
        if self.multi_output:
            try:
                return [p[self.output_key] for p in predictions]
            except (TypeError, KeyError) as exc:
                raise OracleResponseError(
                    f"{self.url}{self.path}:predict: the predictions have no output {self.output_key!r}"
                ) from exc
        return predictions
