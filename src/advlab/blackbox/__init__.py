"""Black-box access to models: oracles that only answer queries (local, scikit-learn, any callable, HTTP).

Query attacks (``advlab.attacks.spsa``, ``nes``, ``boundary``, ``hopskipjump``) accept an :class:`Oracle`
directly or through :func:`as_module`; every query is counted against the oracle's budget.
"""

from advlab.blackbox.ensemble import Ensemble, ensemble_classifier
from advlab.blackbox.http_client import HTTPOracle
from advlab.blackbox.substitute import SubstituteResult, SubstituteRound, papernot_blackbox
from advlab.blackbox.transfer import TransferMatrix, plot_transfer_matrix, transfer_matrix
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
    "BudgetExceeded",
    "CallableOracle",
    "Ensemble",
    "HTTPOracle",
    "Oracle",
    "OracleModule",
    "OracleResponseError",
    "OracleUnavailable",
    "SklearnOracle",
    "SubstituteResult",
    "SubstituteRound",
    "TorchOracle",
    "TransferMatrix",
    "as_module",
    "ensemble_classifier",
    "find_oracle",
    "papernot_blackbox",
    "plot_transfer_matrix",
    "transfer_matrix",
]
