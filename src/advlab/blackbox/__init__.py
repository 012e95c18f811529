"""Black-box access to models: oracles that only answer queries (local, scikit-learn, any callable, HTTP).

Remote models are reached through their serving stack's protocol (:func:`connect`): ``advlab serve``
(:class:`HTTPOracle`), TF-Serving REST (:class:`TFServingOracle`), KServe v2 / Triton (:class:`KServeOracle`),
TorchServe (:class:`TorchServeOracle`) or any JSON API (:class:`TemplateOracle`); headers and tokens come from the
environment (:func:`~advlab.blackbox.transport.request_headers`). Query attacks (``advlab.attacks.spsa``, ``nes``, ``boundary``, ``hopskipjump``) accept an :class:`Oracle`
directly or through :func:`as_module`; every query is counted against the oracle's budget. Papernot et al.'s
substitute attack (:func:`papernot_blackbox`), transferability matrices (:func:`transfer_matrix`; draw them with
:func:`advlab.reports.figures.transfer_heatmap`) and Liu et al.'s ensembles build on them.
"""

from advlab.blackbox.ensemble import Ensemble, ensemble_classifier
from advlab.blackbox.http_client import HTTPOracle
from advlab.blackbox.kserve import KServeOracle
from advlab.blackbox.protocols import PROTOCOLS, connect
from advlab.blackbox.remote import ProtocolMismatch, RemoteOracle
from advlab.blackbox.substitute import (
    SubstituteAttack,
    SubstituteResult,
    SubstituteRound,
    SubstituteSettings,
    papernot_blackbox,
)
from advlab.blackbox.template import TemplateOracle
from advlab.blackbox.tfserving import TFServingOracle
from advlab.blackbox.torchserve import TorchServeOracle
from advlab.blackbox.transfer import TransferMatrix, transfer_matrix
from advlab.blackbox.transport import request_headers
from advlab.oracles import (
    MODES,
    BudgetExceeded,
    CallableOracle,
    Oracle,
    OracleModule,
    OracleResponseError,
    OracleUnavailable,
    SklearnOracle,
    TorchOracle,
    as_module,
    find_oracle,
)

__all__ = [
    "MODES",
    "PROTOCOLS",
    "BudgetExceeded",
    "CallableOracle",
    "Ensemble",
    "HTTPOracle",
    "KServeOracle",
    "Oracle",
    "OracleModule",
    "OracleResponseError",
    "OracleUnavailable",
    "ProtocolMismatch",
    "RemoteOracle",
    "SklearnOracle",
    "SubstituteAttack",
    "SubstituteResult",
    "SubstituteRound",
    "SubstituteSettings",
    "TFServingOracle",
    "TemplateOracle",
    "TorchOracle",
    "TorchServeOracle",
    "TransferMatrix",
    "as_module",
    "connect",
    "ensemble_classifier",
    "find_oracle",
    "papernot_blackbox",
    "request_headers",
    "transfer_matrix",
]
