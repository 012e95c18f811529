"""Black-box access to models: oracles that only answer queries (local, scikit-learn, any callable, HTTP).

Query attacks (``advlab.attacks.spsa``, ``nes``, ``boundary``, ``hopskipjump``) accept an :class:`Oracle`
directly or through :func:`as_module`; every query is counted against the oracle's budget.
"""

from advlab.blackbox.http_client import HTTPOracle
from advlab.blackbox.oracles import (
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
from advlab.blackbox.ensemble import Ensemble, ensemble_classifier
from advlab.blackbox.transfer import TransferMatrix, plot_transfer_matrix, transfer_matrix
from advlab.attacks.substitute import SubstituteResult, SubstituteRound, papernot_blackbox

__all__ = [
    "MODES", "BudgetExceeded", "CallableOracle", "HTTPOracle", "Oracle", "OracleModule", "OracleResponseError",
    "OracleUnavailable", "SklearnOracle", "TorchOracle", "as_module", "find_oracle",
    "Ensemble", "ensemble_classifier", "TransferMatrix", "plot_transfer_matrix", "transfer_matrix",
    "SubstituteResult", "SubstituteRound", "papernot_blackbox",
]
