"""The serving protocols advlab speaks, by name: :func:`connect` builds the oracle for a URL and a protocol."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from advlab import validation
from advlab.blackbox.http_client import HTTPOracle
from advlab.blackbox.kserve import KServeOracle
from advlab.blackbox.remote import PROTOCOL_GUIDE, RemoteOracle
from advlab.blackbox.template import TemplateOracle
from advlab.blackbox.tfserving import TFServingOracle
from advlab.blackbox.torchserve import TorchServeOracle

PROTOCOLS: dict[str, Callable[..., RemoteOracle]] = {
    "advlab": HTTPOracle,
    "tfserving": TFServingOracle,
    "kserve": KServeOracle,
    "torchserve": TorchServeOracle,
    "template": TemplateOracle,
}
"""Protocol name -> oracle class: ``advlab serve``, TF-Serving REST, KServe v2 / Triton, TorchServe, any JSON API."""


def options_of(protocol: str) -> list[str]:
    """The keyword options the oracle class of ``protocol`` takes (besides the URL); a subclass that passes
    ``**kwargs`` on takes its base class's."""
    validation.check_choice("protocol", protocol, PROTOCOLS, PROTOCOL_GUIDE)
    cls = PROTOCOLS[protocol]
    for klass in getattr(cls, "__mro__", (cls,)):
        params = inspect.signature(klass).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return [name for name in params if name != "url"]
    return []


def connect(url: str, protocol: str = "advlab", **options: Any) -> RemoteOracle:
    """An oracle for the model at ``url`` spoken to in ``protocol``; options left at ``None`` are dropped.

    Args:
        url: the server or model address.
        protocol: ``"advlab"``, ``"tfserving"``, ``"kserve"``, ``"torchserve"`` or ``"template"``.
        **options: the chosen oracle class's arguments (``model``, ``mode``, ``budget``, ``headers``...).

    Returns:
        The oracle (:class:`HTTPOracle`, :class:`TFServingOracle`, :class:`KServeOracle`,
        :class:`TorchServeOracle` or :class:`TemplateOracle`).

    Raises:
        ValueError: an unknown protocol (the message lists them), or what the oracle class raises.
        TypeError: an option the protocol does not take.

    Examples:
        >>> oracle = connect("http://127.0.0.1:8501", "tfserving", model="mnist", budget=10_000)
        >>> report = advlab.evaluate(oracle, (x, y), 0.1, attacks=["square"])
    """
    known = options_of(protocol)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(
            f"{', '.join(unknown)}: not an option of the {protocol!r} protocol; it takes {', '.join(known)}"
        )
    return PROTOCOLS[protocol](url, **given)
