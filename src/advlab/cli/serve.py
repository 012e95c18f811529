"""``advlab serve``: serve a saved model over HTTP as a black-box target (labels or scores, with a query limit)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from advlab.cli._common import add_command, add_model_options, load_cli_model, positive_int, resolve_device

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "serve",
        "serve a saved model over HTTP as a black-box target",
        "Serve a model saved by 'advlab train' (a folder with card.json and model.safetensors) with a real web "
        "server (Starlette under uvicorn). GET /info describes the target; POST /predict with "
        '{"inputs": [[...]]} (or {"inputs_b64": ..., "shape": [...]}) answers labels, and scores in scores '
        "mode. Query it from Python with advlab.blackbox.HTTPOracle. Needs the 'serve' extra: "
        "pip install 'advlab[serve]'.",
        "  advlab serve --model runs/m1 --port 8000\n"
        "  advlab serve --model runs/m1 --mode labels --max-queries 100000 --api-key s3cret\n",
    )
    p.add_argument("--model", required=True, help="model folder written by 'advlab train' (card.json + weights)")
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; the default accepts local connections only")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument(
        "--mode",
        choices=["labels", "scores"],
        default="scores",
        help="what the server reveals: the top label only, or class probabilities too",
    )
    p.add_argument(
        "--max-queries",
        type=positive_int,
        default=None,
        help="total examples the server evaluates before answering 429; unlimited when omitted",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("ADVLAB_API_KEY"),
        help="require 'Authorization: Bearer KEY' on every request (default: $ADVLAB_API_KEY; the "
        "environment keeps the key out of the process list)",
    )
    p.add_argument(
        "--max-batch", type=positive_int, default=1024, help="largest batch per request (larger ones get 413)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab import validation

    port = validation.check_int("--port", args.port, minimum=0, maximum=65535)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"advlab serve needs starlette and uvicorn ({exc}); install them with: pip install 'advlab[serve]'"
        ) from exc
    from advlab.blackbox.server import create_app, serve

    model = load_cli_model(args, device=resolve_device(args.device))
    app = create_app(
        model, mode=args.mode, max_queries=args.max_queries, api_key=args.api_key, max_batch=args.max_batch
    )
    if not _is_loopback(args.host) and not args.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach this address can query the model", args.host)
    info = app.state.oracle
    log.info(
        "serving %s (%s mode, %s classes, input %s) on http://%s:%d",
        args.model,
        info.mode,
        info.num_classes,
        info.input_shape,
        args.host,
        port,
    )
    serve(app, host=args.host, port=port, log_level="warning")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
