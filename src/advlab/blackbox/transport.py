"""The HTTP transport of the remote oracles: headers from the environment, timeouts, retries, and clear errors.

One :class:`HTTPTransport` holds a connection pool to a server and sends JSON requests: connection errors,
timeouts and 5xx answers are retried with exponential back-off; every other answer becomes decoded JSON or an
error that says what went wrong and what to do (401/403: the credentials; 404: the address or the protocol; 429:
the server's query limit, or its rate limit, which is waited out like a 5xx).

Credentials never reach a log line or an error message: headers come from ``ADVLAB_HTTP_HEADERS`` (a JSON
object) or from ``Name: value`` lines whose ``$VAR`` / ``${VAR}`` parts are read from the environment, so a token
need not appear on the command line either (``--header 'Authorization: Bearer $TOKEN'``, single-quoted).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from advlab import validation
from advlab.oracles import OracleResponseError, OracleUnavailable

log = logging.getLogger(__name__)

HEADERS_ENV = "ADVLAB_HTTP_HEADERS"
"""Environment variable holding extra request headers as a JSON object, e.g. ``{"Authorization": "Bearer ..."}``."""
RATE_LIMIT_WAIT_MAX = 60.0
"""Longest wait, in seconds, that a ``Retry-After`` header of a 429 or 503 answer is honoured for."""
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class EndpointNotFound(OracleResponseError):
    """The server answered 404: the address, the model name or the protocol is wrong.

    Attributes:
        path: the path that was asked for.
        payload: the decoded JSON of the answer (``None`` when it was not JSON).
    """

    def __init__(self, message: str, path: str, payload: Any) -> None:
        super().__init__(message)
        self.path = path
        self.payload = payload


class RequestRejected(ValueError):
    """The server refused the request with a 4xx answer other than 401, 403, 404 and 429.

    Attributes:
        status: the HTTP status.
        payload: the decoded JSON of the answer (``None`` when it was not JSON).
    """

    def __init__(self, message: str, status: int, payload: Any) -> None:
        super().__init__(message)
        self.status = status
        self.payload = payload


class QueryLimitReached(RuntimeError):
    """The server answered 429 and the protocol means "query limit reached" by it (advlab's own server).

    Attributes:
        payload: the decoded JSON of the answer (``None`` when it was not JSON).
    """

    def __init__(self, message: str, payload: Any) -> None:
        super().__init__(message)
        self.payload = payload


def expand_variables(text: str, what: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with each ``$VAR`` or ``${VAR}`` replaced by the environment variable's value.

    Raises:
        ValueError: naming the variable (never a value) when it is not set.

    Examples:
        >>> expand_variables("Bearer $TOKEN", "--header Authorization")
        'Bearer ...'
    """
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise ValueError(f"{what}: the environment variable ${name} is not set; export it first")
        return env[name]

    return _VARIABLE.sub(value, text)


def parse_header(line: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``"Name: value"`` as ``(name, value)``, with ``$VAR`` parts of the value read from the environment.

    Raises:
        ValueError: when the line has no ``:`` or no name (the message never shows the value).

    Examples:
        >>> parse_header("Authorization: Bearer $TOKEN")
        ('Authorization', 'Bearer ...')
    """
    if not isinstance(line, str) or ":" not in line:
        raise ValueError("--header: expected 'Name: value', e.g. --header 'Authorization: Bearer $TOKEN'")
    name, value = line.split(":", 1)
    name = name.strip()
    if not name or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
        raise ValueError(f"--header: {name!r} is not a header name; expected 'Name: value'")
    return name, expand_variables(value.strip(), f"--header {name}", environ)


def request_headers(lines: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Request headers from ``$ADVLAB_HTTP_HEADERS`` (a JSON object) then ``lines`` (``"Name: value"``, later wins).

    Values may name environment variables (``$TOKEN``), read when the headers are built.

    Raises:
        ValueError: a malformed ``ADVLAB_HTTP_HEADERS`` or header line, or an unset variable.

    Examples:
        >>> request_headers(["Authorization: Bearer $TOKEN"])  # doctest: +SKIP
        {'Authorization': 'Bearer ...'}
    """
    env = os.environ if environ is None else environ
    headers: dict[str, str] = {}
    text = env.get(HEADERS_ENV, "").strip()
    if text:
        try:
            given = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{HEADERS_ENV}: expected a JSON object of header names and values ({exc.msg})") from None
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise ValueError(
                f'{HEADERS_ENV}: expected a JSON object of strings, e.g. {{"Authorization": "Bearer ..."}}'
            )
        for name, value in given.items():
            headers[str(name)] = expand_variables(value, f"{HEADERS_ENV} {name}", env)
    for line in lines:
        name, value = parse_header(line, env)
        headers[name] = value
    return headers


def error_message(payload: Any, text: str) -> str:
    """The server's own error message: ``error`` (TF-Serving, KServe, advlab), ``message`` (TorchServe), or text."""
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            if isinstance(payload.get(key), str) and payload[key]:
                return str(payload[key])[:300]
    return text[:200]


class HTTPTransport:
    """JSON requests to one server with timeouts and retries.

    Args:
        url: the server's base address (``http://host:port``, optionally with a path prefix).
        headers: headers sent with every request (never logged).
        timeout: seconds to wait for connecting and for each answer.
        retries: extra attempts after a connection error, a timeout, a 5xx answer or (when ``limit_429`` is false)
            a 429 answer.
        backoff: first wait between attempts in seconds; doubled after each failure.
        limit_429: a 429 answer means the server's query limit is reached (:class:`QueryLimitReached`) instead of
            a rate limit to wait out.
        unreachable_hint: the sentence added to :class:`~advlab.oracles.OracleUnavailable`'s message.
        transport: an ``httpx`` transport instead of the network (``httpx.MockTransport`` in tests).

    Examples:
        >>> http = HTTPTransport("http://127.0.0.1:8501", headers=request_headers())
        >>> http.get("/v1/models/mnist/metadata")
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10,
        retries: int = 3,
        backoff: float = 0.5,
        limit_429: bool = False,
        unreachable_hint: str = "Check that the server is running and the address is right.",
        transport: Any = None,
    ) -> None:
        import httpx

        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url: expected an http:// or https:// address, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = validation.check_float("timeout", timeout, minimum=0.0, strict_min=True)
        self.retries = validation.check_int("retries", retries, minimum=0)
        self.backoff = validation.check_float("backoff", backoff, minimum=0.0)
        self.limit_429 = bool(limit_429)
        self.unreachable_hint = unreachable_hint
        self.header_names = sorted(headers or {})
        self._client = httpx.Client(
            base_url=self.url, headers=dict(headers or {}), timeout=self.timeout, transport=transport
        )

    def get(self, path: str) -> Any:
        """``GET path``: the decoded JSON of a 2xx answer."""
        return self.request("GET", path)

    def post(self, path: str, payload: Any) -> Any:
        """``POST path`` with ``payload`` as a JSON body: the decoded JSON of a 2xx answer."""
        return self.request("POST", path, json.dumps(payload, separators=(",", ":")).encode())

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        """Send one request with retries; return the decoded JSON of a 2xx answer.

        Raises:
            OracleUnavailable: the server cannot be reached (or keeps failing) after all attempts.
            PermissionError: 401/403, the credentials are missing or wrong.
            EndpointNotFound: 404.
            QueryLimitReached: 429 when ``limit_429``.
            RequestRejected: any other 4xx (a ``ValueError``), with the server's message.
            OracleResponseError: a 2xx answer that is not JSON.
        """
        import httpx

        attempt = 0
        while True:
            wait = self.backoff * (2**attempt)
            try:
                resp = self._send(method, path, body)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                error: str = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 500 and not (resp.status_code == 429 and not self.limit_429):
                    return self._decode(resp, path)
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                wait = max(wait, _retry_after(resp))
            if attempt >= self.retries:
                raise OracleUnavailable(
                    f"target {self.url}{path} unreachable after {attempt + 1} attempt(s): {error}. "
                    f"{self.unreachable_hint}"
                )
            log.warning("%s %s failed (%s); retrying in %.2f s", method, path, error, wait)
            time.sleep(wait)
            attempt += 1

    def _send(self, method: str, path: str, body: bytes | None) -> Any:
        if method == "GET":
            return self._client.get(path)
        return self._client.post(path, content=body, headers={"Content-Type": "application/json"})

    def _decode(self, resp: Any, path: str) -> Any:
        try:
            payload = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            payload = None
        code, where = resp.status_code, f"{self.url}{path}"
        message = error_message(payload, resp.text)
        if code in (401, 403):
            sent = (
                f"the headers sent were {', '.join(self.header_names)}" if self.header_names else "no header was sent"
            )
            raise PermissionError(
                f"{where}: the server refused the credentials (HTTP {code}: {message}); {sent}. Give them with "
                f"--header 'Authorization: Bearer $TOKEN' or ${HEADERS_ENV} (for advlab serve: its API key, --api-key)"
            )
        if code == 404:
            raise EndpointNotFound(f"{where}: HTTP 404 ({message})", path, payload)
        if code == 429:
            raise QueryLimitReached(message, payload)
        if code >= 400:
            raise RequestRejected(f"{where}: the server rejected the request (HTTP {code}): {message}", code, payload)
        if payload is None:
            raise OracleResponseError(f"{where}: the answer is not JSON (first bytes: {resp.text[:80]!r})")
        return payload

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _retry_after(resp: Any) -> float:
    """Seconds a 429/503 answer asks to wait (its ``Retry-After`` header), capped; 0 when it does not say."""
    try:
        return min(RATE_LIMIT_WAIT_MAX, max(0.0, float(resp.headers.get("Retry-After", 0))))
    except ValueError:
        return 0.0
