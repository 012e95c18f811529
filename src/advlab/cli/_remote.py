"""Options of the commands that reach a model behind a serving stack (``--target URL --protocol ...``), and the
oracle they describe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from advlab.cli._common import parse_float_list, positive_int

PROTOCOL_NAMES = ("advlab", "tfserving", "kserve", "torchserve", "template")
"""The values of ``--protocol`` (``advlab.blackbox.PROTOCOLS``, named here so that ``advlab --help`` stays light)."""

OPTION_FLAGS = {
    "model": "--model-name",
    "version": "--model-version",
    "signature": "--signature",
    "input_name": "--input-name",
    "output_name": "--output-name",
    "request_template": "--request-template",
    "response_path": "--response-path",
    "output": "--target-output",
    "num_classes": "--target-classes",
    "input_shape": "--target-shape",
    "bounds": "--target-bounds",
    "layout": "--target-layout",
    "api_key": "--api-key",
    "batch_size": "--query-batch",
    "concurrency": "--query-batch",
}
"""The command-line flag of each oracle option, for errors about options a protocol does not take."""

PROTOCOL_HELP = (
    "how to talk to a --target URL: advlab (advlab serve), tfserving (TF-Serving REST: /v1/models/NAME:predict), "
    "kserve (KServe v2 / Triton: /v2/models/NAME/infer), torchserve (/predictions/NAME), template (any JSON API: "
    "--request-template and --response-path)"
)


def add_remote_options(p: argparse.ArgumentParser, *, api_key: bool = True) -> None:
    """The options describing a remote ``--target`` (protocol, model, headers, what it answers, batching)."""
    g = p.add_argument_group("remote target (--target URL)")
    g.add_argument("--protocol", default="advlab", choices=PROTOCOL_NAMES, help=PROTOCOL_HELP)
    g.add_argument("--model-name", default=None, help="served model's name (tfserving, kserve, torchserve)")
    g.add_argument("--model-version", default=None, help="served model's version (default: the server's)")
    g.add_argument("--signature", default=None, help="tfserving: signature (default serving_default)")
    g.add_argument("--input-name", default=None, help="kserve: the input tensor, when the model has several")
    g.add_argument("--output-name", default=None, help="tfserving, kserve: the output to read, when there are several")
    g.add_argument(
        "--request-template",
        default=None,
        help='template: JSON body (or @FILE) with "{{inputs}}", "{{inputs_flat}}" or "{{input}}", e.g. '
        '\'{"instances": "{{inputs}}"}\'',
    )
    g.add_argument(
        "--response-path", default=None, help="template: where the answer is, e.g. predictions or outputs.0.data"
    )
    g.add_argument(
        "--target-output",
        default=None,
        choices=["auto", "probabilities", "logits", "labels"],
        help="what the model answers per example (default: from its metadata, then its first answer)",
    )
    g.add_argument(
        "--target-classes", type=positive_int, default=None, help="number of classes, where no metadata says"
    )
    g.add_argument("--target-shape", default=None, help="input shape per example (NCHW), e.g. 1,28,28")
    g.add_argument("--target-bounds", default=None, help="valid input range LOW,HIGH (default 0,1)")
    g.add_argument("--target-layout", default=None, choices=["nchw", "nhwc"], help="image layout the server takes")
    g.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="request header (repeatable); $VAR parts are read from the environment, e.g. --header "
        "'Authorization: Bearer $TOKEN' (single quotes); more headers in $ADVLAB_HTTP_HEADERS (a JSON object)",
    )
    g.add_argument("--query-batch", type=positive_int, default=None, help="examples per request (default 256)")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")
    g.add_argument("--retries", type=int, default=2, help="extra attempts when the server does not answer")
    if api_key:
        g.add_argument(
            "--api-key", default=None, help="advlab serve's API key (or --header 'Authorization: Bearer $KEY')"
        )


def is_url(target: str) -> bool:
    """Whether ``--target`` names a server (``scheme://...``) rather than a model folder."""
    return "://" in target


def check_url(target: str) -> None:
    """An http(s) URL with a host, or a ``ValueError`` naming ``--target``."""
    scheme, _, rest = target.partition("://")
    if scheme.lower() not in ("http", "https"):
        raise ValueError(f"--target: expected an http:// or https:// URL, got scheme {scheme!r} in {target!r}")
    if not rest.split("/", 1)[0]:
        raise ValueError(f"--target: the URL {target!r} has no host; example: http://127.0.0.1:8000")


def _pair(text: str | None, flag: str) -> tuple[float, float] | None:
    if text is None:
        return None
    values = parse_float_list(text, flag)
    if len(values) != 2:
        raise ValueError(f"{flag}: expected LOW,HIGH, e.g. 0,1; got {text!r}")
    return values[0], values[1]


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--target-shape: expected sizes such as 1,28,28; got {text!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"--target-shape: expected positive sizes such as 1,28,28; got {text!r}")
    return shape


def _template(text: str | None) -> str | None:
    if text is None or not text.startswith("@"):
        return text
    path = Path(text[1:])
    if not path.is_file():
        raise FileNotFoundError(f"--request-template: {str(path)!r} is not a file (@FILE reads the template from it)")
    return path.read_text()


def remote_options(args: argparse.Namespace, *, mode: str | None, budget: int | None) -> dict[str, Any]:
    """The options of :func:`advlab.blackbox.connect` given on the command line (``None`` where not given)."""
    from advlab.blackbox import request_headers

    batch = "concurrency" if args.protocol == "torchserve" else "batch_size"
    return {
        "mode": mode,
        "budget": budget,
        "timeout": args.timeout,
        "retries": args.retries,
        "headers": request_headers(args.header) or None,
        "api_key": getattr(args, "api_key", None),
        "model": args.model_name,
        "version": args.model_version,
        "signature": args.signature,
        "input_name": args.input_name,
        "output_name": args.output_name,
        "request_template": _template(args.request_template),
        "response_path": args.response_path,
        "output": args.target_output,
        "num_classes": args.target_classes,
        "input_shape": _shape(args.target_shape),
        "bounds": _pair(args.target_bounds, "--target-bounds"),
        "layout": args.target_layout,
        batch: args.query_batch,
    }


def open_remote(args: argparse.Namespace, *, mode: str | None, budget: int | None) -> Any:
    """The oracle for ``--target URL`` in ``--protocol``; every failure to open it is one ``ValueError`` line.

    Raises:
        ValueError: an option the protocol does not take, an unreachable server, refused credentials, a server that
            does not speak the protocol (the message lists the protocols), or a bad description.
    """
    from advlab.blackbox import OracleUnavailable, connect
    from advlab.blackbox.protocols import options_of

    check_url(args.target)
    if budget is not None and budget < 1:
        raise ValueError(f"--budget: expected a positive number of queries, got {budget}. Leave it out for unlimited.")
    options = remote_options(args, mode=mode, budget=budget)
    taken = set(options_of(args.protocol))
    stray = sorted({OPTION_FLAGS.get(k, k) for k, v in options.items() if v is not None and k not in taken})
    if stray:
        raise ValueError(
            f"{', '.join(stray)}: not used by --protocol {args.protocol}; leave it out or pick another protocol"
        )
    if args.protocol == "template" and (args.request_template is None or args.response_path is None):
        raise ValueError("--protocol template needs --request-template and --response-path")
    try:
        return connect(args.target, args.protocol, **options)
    except OracleUnavailable as exc:
        raise ValueError(f"--target: cannot reach {args.target} ({exc})") from exc
    except PermissionError as exc:
        raise ValueError(f"--target: {exc}") from exc
