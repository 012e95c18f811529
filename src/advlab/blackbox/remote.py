"""The base of the remote oracles: a model behind an HTTP API, queried in batches, its answers read as labels,
probabilities or logits.

Each serving protocol (:mod:`advlab.blackbox.http_client` for ``advlab serve``, :mod:`~advlab.blackbox.tfserving`,
:mod:`~advlab.blackbox.kserve`, :mod:`~advlab.blackbox.torchserve`, :mod:`~advlab.blackbox.template`) is a small
subclass of :class:`RemoteOracle` that reads the target's description (from the server's metadata where the
protocol has it, else from its arguments) and turns one batch into one request. The base class does the rest: the
budget (each example costs one query, counted before the batch is sent; a batch that fails is refunded except the
chunks the server already answered), chunking into ``batch_size`` examples per request, the layout the server wants
(``"nhwc"`` for most TensorFlow image models), and reading the answers: integer labels, class probabilities, or
logits (turned into probabilities with a softmax). ``output="auto"`` tells probabilities from logits on the first
answer (rows of non-negative numbers that sum to one are probabilities).
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
import torch

from advlab import validation
from advlab.blackbox.transport import EndpointNotFound, HTTPTransport, RequestRejected
from advlab.oracles import Oracle, OracleResponseError, check_labels_answer, check_mode, check_scores_answer

log = logging.getLogger(__name__)

OUTPUTS = ("auto", "probabilities", "logits", "labels")
"""What the server answers per example: ``"auto"`` (told from the metadata or the first answer), class
``"probabilities"``, ``"logits"`` (a softmax makes them probabilities) or ``"labels"`` (one class index)."""
LAYOUTS = ("nchw", "nhwc")
"""Image layouts a server may expect; attacks always work in NCHW and the oracle transposes for the server."""
PROBABILITY_TOLERANCE = 1e-3
"""How far from one a row of probabilities may sum (float32 softmax outputs sum to one within about 1e-6)."""
PROTOCOL_GUIDE = (
    "advlab speaks advlab (advlab serve: GET /info), tfserving (TF-Serving REST: GET /v1/models/NAME/metadata), "
    "kserve (KServe v2 / Triton: GET /v2/models/NAME), torchserve (POST /predictions/NAME) and template (any JSON "
    "API, described by a request template and a response path); pick one with --protocol and name the model with "
    "--model-name (Python: advlab.blackbox.connect(url, protocol=..., model=...))"
)
"""The one line that lists the protocols and says how to pick one."""
_URL_PATTERNS = (
    ("tfserving", re.compile(r"/v1/models/([^/:]+)")),
    ("kserve", re.compile(r"/v2/models/([^/]+)")),
    ("torchserve", re.compile(r"/predictions/([^/]+)")),
)


class ProtocolMismatch(OracleResponseError):
    """The target does not answer the chosen protocol's description endpoint (a 404, or not the protocol's JSON)."""


def guess_protocol(url: str) -> tuple[str, str] | None:
    """``(protocol, model name)`` when the URL's path has a protocol's shape (``/v1/models/NAME``...), else ``None``.

    Examples:
        >>> guess_protocol("http://host:8501/v1/models/mnist:predict")
        ('tfserving', 'mnist')
    """
    path = urlsplit(url).path
    for protocol, pattern in _URL_PATTERNS:
        match = pattern.search(path)
        if match:
            return protocol, match.group(1)
    return None


def mismatch(url: str, protocol: str, what: str) -> ProtocolMismatch:
    """The one-line error for a target that does not speak ``protocol``: what it answered, the protocols advlab
    speaks, how to pick one, and the protocol its URL suggests (when it suggests one)."""
    guess = guess_protocol(url)
    hint = ""
    if guess is not None and guess[0] != protocol:
        hint = f". This address looks like {guess[0]}: --protocol {guess[0]} --model-name {guess[1]}"
    return ProtocolMismatch(
        f"{url} does not speak the {protocol!r} protocol ({what}). {PROTOCOL_GUIDE}{hint}".replace("\n", " ")
    )


def split_url(url: str, pattern: str) -> tuple[str, dict[str, str]]:
    """``(base URL, named groups)``: a protocol's full URL (``http://h/v1/models/NAME:predict``) cut at the match of
    ``pattern`` in its path; the whole URL and no groups when the path does not match.

    Examples:
        >>> split_url("http://h:8501/v1/models/mnist:predict", r"/v1/models/(?P<model>[^/:]+)")
        ('http://h:8501', {'model': 'mnist'})
    """
    parts = urlsplit(url)
    match = re.search(pattern, parts.path)
    if match is None:
        return url.rstrip("/"), {}
    base = f"{parts.scheme}://{parts.netloc}{parts.path[: match.start()]}".rstrip("/")
    return base, {k: v for k, v in match.groupdict().items() if v}


def served_model(
    url: str, pattern: str, model: str | None, version: str | None, route: str
) -> tuple[str, str, str | None]:
    """``(base URL, model, version)`` of a served model: the arguments, else what the URL names (:func:`split_url`).

    Args:
        url: the server's URL, or a protocol's full URL of the model.
        pattern: the protocol's model path, with named groups ``model`` (and ``version``).
        model: the model's name, when given.
        version: its version, when given.
        route: the protocol's path to a model, for the message (``"/v1/models"``).

    Raises:
        ValueError: neither the arguments nor the URL name the model.

    Examples:
        >>> served_model("http://h:8501/v1/models/mnist", r"/v1/models/(?P<model>[^/:]+)", None, None, "/v1/models")
        ('http://h:8501', 'mnist', None)
    """
    base, named = split_url(url, pattern)
    model, version = model or named.get("model"), version or named.get("version")
    if not model:
        raise ValueError(f"model: name the served model (--model-name NAME), e.g. {base}{route}/NAME")
    return base, model, version


def resolve_mode(mode: str | None, output: str, source: str) -> str:
    """The oracle's mode: ``mode`` when given (checked against what the server answers), else what it answers."""
    if mode is None:
        return "labels" if output == "labels" else "scores"
    mode = check_mode(mode)
    if mode == "scores" and output == "labels":
        raise ValueError(
            f"mode: 'scores' was asked but {source} answers labels only; use mode='labels' (--mode labels) or, if "
            "it does answer scores, say so with output='probabilities' or 'logits' (--target-output)"
        )
    return mode


def check_input_dtype(dtype: str, source: str) -> None:
    """The server's input tensor takes floating-point values (attacks move inputs continuously)."""
    if not re.search(r"FLOAT|FP(16|32|64)|DOUBLE|HALF|BF16|BFLOAT", dtype.upper()):
        raise ValueError(
            f"{source}: the model's input is {dtype}, not floating point; advlab sends float32 values in the "
            "bounds. Serve a signature that takes floats (e.g. with the cast inside the model)."
        )


class RemoteOracle(Oracle):
    """A model behind an HTTP API; subclasses implement :meth:`_send` (one request per chunk) and their metadata.

    Args:
        http: the transport to the server (its headers, timeouts and retries).
        model: the served model's name (``None`` for protocols without one).
        output: what the server answers per example, one of :data:`OUTPUTS`.
        mode: ``"labels"`` or ``"scores"`` (what the oracle reveals to attacks); ``None``: scores unless the server
            answers labels.
        num_classes: number of classes (``None``: learned from the first answer of scores; required for labels).
        input_shape: per-example shape as attacks see it (NCHW), ``None`` for any.
        bounds: valid input range.
        budget: maximum number of examples evaluated, ``None`` for unlimited.
        batch_size: examples per request.
        layout: ``"nchw"``, or ``"nhwc"`` to transpose 4-d batches for the server.

    Raises:
        ValueError: a bad setting, or labels without a number of classes.
    """

    protocol: ClassVar[str] = ""

    def __init__(
        self,
        http: HTTPTransport,
        *,
        model: str | None,
        output: str,
        mode: str | None,
        num_classes: int | None,
        input_shape: tuple[int, ...] | None,
        bounds: tuple[float, float],
        budget: int | None,
        batch_size: int,
        layout: str = "nchw",
    ) -> None:
        validation.check_choice("output", output, OUTPUTS)
        validation.check_choice("layout", layout, LAYOUTS)
        self.http = http
        self.url = http.url
        self.model_name = model
        if output == "labels" and num_classes is None:
            raise ValueError(
                f"num_classes: {self.source} answers labels, so the number of classes must be given "
                "(num_classes=..., --target-classes N)"
            )
        super().__init__(
            resolve_mode(mode, output, self.source),
            num_classes,
            budget=budget,
            input_shape=input_shape,
            bounds=bounds,
        )
        self.output = output
        self.layout = layout
        self.batch_size = validation.check_int("batch_size", batch_size, minimum=1)
        self._answered = 0

    @property
    def source(self) -> str:
        """The target in error messages: its address and protocol."""
        return f"{self.url} ({self.protocol})"

    # ------------------------------------------------------------------ for subclasses
    def _send(self, x: torch.Tensor) -> Any:
        """Query the server on one chunk (already in the server's layout); return its numbers, shape ``(n, ...)``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The oracle's identity plus its protocol, address and model (never a header)."""
        return {**super().describe(), "protocol": self.protocol, "url": self.url, "model": self.model_name}

    # ------------------------------------------------------------------ batches and answers
    def _to_server(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).contiguous() if self.layout == "nhwc" and x.dim() == 4 else x

    def _answers(self, x: torch.Tensor) -> torch.Tensor:
        """Labels ``(N,)`` or probabilities ``(N, C)`` for a validated batch, one request per chunk."""
        out = []
        self._answered = 0
        for i in range(0, x.shape[0], self.batch_size):
            chunk = x[i : i + self.batch_size]
            out.append(self._read(self._send(self._to_server(chunk)), chunk.shape[0]))
            self._answered += chunk.shape[0]
        return torch.cat(out)

    def _read(self, raw: Any, n: int) -> torch.Tensor:
        """One chunk's answer as labels ``(n,)`` or probabilities ``(n, C)``, checked."""
        try:
            values = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise OracleResponseError(f"{self.source}: the answer is not numeric ({str(raw)[:80]})") from exc
        if values.ndim > 2 and values.shape[0] == n:
            values = values.reshape(n, -1)
        if values.ndim == 2 and values.shape[1] == 1 and self.output == "labels":
            values = values[:, 0]
        if values.ndim == 1 and self.output in ("auto", "labels"):
            return check_labels_answer(torch.from_numpy(values), n, self.num_classes, self.source)
        if values.ndim == 1:
            raise OracleResponseError(
                f"{self.source}: expected a row of {self.output} per example, got one number per example; if these "
                "are class labels, say so with output='labels' (--target-output labels)"
            )
        if self.output == "labels":
            raise OracleResponseError(
                f"{self.source}: labels were declared but the answer has shape {values.shape}; use "
                "output='auto' (--target-output auto) to read it as scores"
            )
        return self._probabilities(values, n)

    def _probabilities(self, values: np.ndarray, n: int) -> torch.Tensor:
        scores = check_scores_answer(torch.from_numpy(values), n, self.num_classes, self.source)
        if self.num_classes is None and scores.shape[1] >= 2:
            self.num_classes = int(scores.shape[1])
        sums = values.sum(1)
        looks_like = bool((values >= -1e-6).all() and np.abs(sums - 1).max(initial=0.0) <= PROBABILITY_TOLERANCE)
        if self.output == "auto":
            self.output = "probabilities" if looks_like else "logits"
            log.info("%s answers %s (decided on its first answer)", self.source, self.output)
        if self.output == "logits":
            return torch.softmax(scores, dim=1)
        if not looks_like:
            raise OracleResponseError(
                f"{self.source}: the answers are not probabilities (rows sum to {float(sums.min()):.4g}.."
                f"{float(sums.max()):.4g}); if they are logits, say so with output='logits' (--target-output logits)"
            )
        return scores

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        answers = self._answers(x)
        return answers if answers.dim() == 1 else answers.argmax(1)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        answers = self._answers(x)
        if answers.dim() == 1:
            raise OracleResponseError(
                f"{self.source}: the server answers labels only; create the oracle with mode='labels' "
                "and output='labels' (--mode labels --target-output labels)"
            )
        return answers

    def _refund(self, n: int) -> None:
        # chunks the server already answered were spent; only the rest is given back
        super()._refund(n - self._answered)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> RemoteOracle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def fetch_description(oracle_url: str, http: HTTPTransport, path: str, protocol: str) -> dict[str, Any]:
    """``GET path`` (the protocol's description endpoint, no query): a JSON object, or :class:`ProtocolMismatch`
    naming what came instead. A 400 or 404 whose JSON has an ``error`` comes from a server of the protocol that does
    not know the model (for the protocols that name one): that is a :class:`ValueError` saying so."""
    try:
        answer = http.get(path)
    except (EndpointNotFound, RequestRejected) as exc:
        error = exc.payload.get("error") if isinstance(exc.payload, dict) else None
        if isinstance(error, str) and protocol in ("tfserving", "kserve"):
            raise ValueError(
                f"{oracle_url}{path}: the server does not know this model ({error[:200]}); check the model name "
                "(--model-name) and version"
            ) from None
        status = exc.status if isinstance(exc, RequestRejected) else 404
        raise mismatch(oracle_url, protocol, f"GET {path} answered HTTP {status}") from None
    except OracleResponseError as exc:
        raise mismatch(oracle_url, protocol, f"GET {path} did not answer JSON: {str(exc).split(': ', 1)[-1]}") from None
    if not isinstance(answer, dict):
        raise mismatch(oracle_url, protocol, f"GET {path} answered {str(answer)[:60]!r}, not a JSON object")
    return answer
