"""The KServe v2 / Triton inference protocol (the Open Inference Protocol) as an oracle.

Protocol (KServe "Predict Protocol - Version 2", https://kserve.github.io/website/docs/concepts/architecture/
data-plane/v2-protocol; the same REST API in NVIDIA Triton, Seldon MLServer, OpenVINO Model Server):

- ``GET /v2/models/NAME[/versions/V]`` answers the model metadata ``{"name", "versions", "platform", "inputs":
  [{"name", "datatype", "shape"}], "outputs": [...]}``; variable dimensions are -1.
- ``POST /v2/models/NAME[/versions/V]/infer`` with ``{"inputs": [{"name", "shape", "datatype", "data"}],
  "outputs": [{"name"}]}`` answers ``{"model_name", "outputs": [{"name", "shape", "datatype", "data"}]}``; tensor
  data is row-major, flat (or nested), and ``shape`` covers the whole batch.
- Datatypes: ``BOOL``, ``UINT8``...``UINT64``, ``INT8``...``INT64``, ``FP16``, ``FP32``, ``FP64``, ``BYTES``.
- Errors are ``{"error": message}`` with an HTTP error status (typically 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from advlab.blackbox.remote import RemoteOracle, check_input_dtype, fetch_description, mismatch, served_model
from advlab.blackbox.tfserving import chw_shape
from advlab.blackbox.transport import HTTPTransport
from advlab.oracles import OracleResponseError

URL_PATH = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
"""A KServe v2 model URL's path, e.g. ``/v2/models/mnist/versions/1/infer``."""
FLOAT_TYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
"""The datatypes an input may have (attacks move inputs continuously)."""


def tensor(metadata: Mapping[str, Any], key: str, name: str | None, option: str, where: str) -> dict[str, Any]:
    """The metadata of input or output ``name`` (``key`` is ``"inputs"`` or ``"outputs"``), or the only one."""
    tensors = metadata.get(key)
    if not isinstance(tensors, list) or not all(isinstance(t, dict) and "name" in t for t in tensors):
        raise mismatch(where, "kserve", f"the model metadata has no list of {key} with names")
    names = [str(t["name"]) for t in tensors]
    if name is not None:
        if name not in names:
            raise ValueError(f"{option}: the model has no {key[:-1]} {name!r}; it has {', '.join(names)}")
        return tensors[names.index(name)]
    if len(tensors) != 1:
        raise ValueError(
            f"{option}: the model has {len(tensors)} {key} ({', '.join(names)}); name the one to use ({option} NAME)"
        )
    return tensors[0]


def output_kind(datatype: str, shape: list[int]) -> tuple[str, int | None]:
    """``(output, num_classes)`` of an output tensor: integer datatypes or no class axis are labels."""
    if datatype.upper().startswith(("INT", "UINT", "BOOL")):
        return "labels", None
    if len(shape) < 2:
        return "auto", None
    classes = int(shape[-1])
    return ("labels", None) if classes == 1 else ("auto", classes if classes > 1 else None)


class KServeOracle(RemoteOracle):
    """A model behind the KServe v2 / Triton inference protocol, as an oracle.

    Args:
        url: the server (``http://host:8000``) or the model's URL (``http://host:8000/v2/models/mnist``, which
            names the model and its version).
        model: the model's name, unless the URL names it.
        version: a model version (default: the server's choice).
        input_name: the input tensor when the model has several.
        output_name: the output tensor when the model has several.
        mode: ``"labels"`` or ``"scores"`` (``None``: scores unless the model answers labels).
        output: what the model answers (``"auto"``: from its datatype and shape, then the first answer).
        num_classes: number of classes when the metadata does not say.
        input_shape: per-example shape (NCHW) when the metadata does not say.
        bounds: valid input range (the protocol does not publish it).
        budget: maximum number of examples evaluated, ``None`` for unlimited.
        batch_size: examples per request (lowered to a fixed batch dimension in the metadata).
        layout: ``"nhwc"`` when the model takes channels last; attacks stay NCHW.
        headers: request headers (see :func:`advlab.blackbox.transport.request_headers`); never logged.
        timeout: seconds to wait for connecting and for each answer.
        retries: extra attempts after a connection error, a timeout, a 5xx or a 429 answer.
        backoff: first wait between attempts in seconds; doubled after each failure.
        transport: an ``httpx`` transport instead of the network (tests).

    Raises:
        ProtocolMismatch: the metadata endpoint does not answer the protocol (the message lists the protocols).
        ValueError: no model name, an unknown model, input or output, a non-float input.

    Examples:
        >>> oracle = KServeOracle("http://127.0.0.1:8000/v2/models/mnist", budget=20_000)
        >>> labels = oracle.predict(x)
    """

    protocol = "kserve"

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        version: str | None = None,
        input_name: str | None = None,
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
        base, model, version = served_model(url, URL_PATH, model, version, "/v2/models")
        http = HTTPTransport(
            base, headers=headers, timeout=timeout, retries=retries, backoff=backoff, transport=transport
        )
        self.path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        self.version = version
        metadata = fetch_description(base, http, self.path, "kserve")
        spec = tensor(metadata, "inputs", input_name, "--input-name", base)
        out = tensor(metadata, "outputs", output_name, "--output-name", base)
        self.input_name, self.datatype = str(spec["name"]), str(spec.get("datatype", "FP32")).upper()
        check_input_dtype(self.datatype, f"{base}{self.path}")
        self.output_name = str(out["name"])
        dims = [int(d) for d in spec.get("shape") or []]
        declared, classes = output_kind(str(out.get("datatype", "FP32")), [int(d) for d in out.get("shape") or []])
        super().__init__(
            http,
            model=model,
            output=declared if output == "auto" else output,
            mode=mode,
            num_classes=num_classes if num_classes is not None else classes,
            input_shape=input_shape if input_shape is not None else chw_shape(dims, layout),
            bounds=bounds,
            budget=budget,
            batch_size=batch_size,
            layout=layout,
        )
        if dims and dims[0] > 0:  # a fixed batch dimension
            self.batch_size = min(self.batch_size, dims[0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "version": self.version, "input": self.input_name, "output": self.output_name}

    def _send(self, x: torch.Tensor) -> Any:
        arr = x.detach().cpu().numpy().astype(FLOAT_TYPES.get(self.datatype, np.float32))
        request = {
            "inputs": [
                {
                    "name": self.input_name,
                    "shape": list(arr.shape),
                    "datatype": self.datatype,
                    "data": arr.ravel().tolist(),
                }
            ],
            "outputs": [{"name": self.output_name}],
        }
        answer = self.http.post(self.path + "/infer", request)
        where = f"{self.url}{self.path}/infer"
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, list):
            raise OracleResponseError(f"{where}: expected {{'outputs': [...]}}, got {str(answer)[:100]}")
        found = [o for o in outputs if isinstance(o, dict) and o.get("name") == self.output_name]
        if not found and len(outputs) == 1 and isinstance(outputs[0], dict):
            found = outputs
        if not found or "data" not in found[0]:
            names = [o.get("name") for o in outputs if isinstance(o, dict)]
            raise OracleResponseError(f"{where}: the answer has no output {self.output_name!r} with data (has {names})")
        return _shaped(found[0], x.shape[0], where)


def _shaped(output: Mapping[str, Any], n: int, where: str) -> np.ndarray:
    """An output tensor's data in its declared shape, the batch first."""
    if str(output.get("datatype", "FP32")).upper() == "BYTES":
        raise OracleResponseError(f"{where}: the output {output.get('name')!r} is BYTES, not numbers")
    try:
        data = np.asarray(output["data"], dtype=np.float64)
        shape = [int(d) for d in output.get("shape") or [n, -1]]
        return data.reshape(shape)
    except (TypeError, ValueError) as exc:
        raise OracleResponseError(f"{where}: the output data does not fit its shape {output.get('shape')}") from exc
