"""Black-box access to models: oracles that only answer queries (local, scikit-learn, any callable, HTTP).

Query attacks (``advlab.attacks.spsa``, ``nes``, ``boundary``, ``hopskipjump``) accept an :class:`Oracle`
directly or through :func:`as_module`; every query is counted against the oracle's budget. Papernot et al.'s
substitute attack (:func:`papernot_blackbox`), transferability matrices (:func:`transfer_matrix`; draw them with
:func:`advlab.reports.figures.transfer_heatmap`) and Liu et al.'s ensembles build on them.
"""

from advlab.blackbox.ensemble import Ensemble, ensemble_classifier
from advlab.blackbox.http_client import HTTPOracle
from advlab.blackbox.substitute import (
    SubstituteAttack,
    SubstituteResult,
    SubstituteRound,
    SubstituteSettings,
    papernot_blackbox,
)
from advlab.blackbox.transfer import TransferMatrix, transfer_matrix
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
    "SubstituteAttack",
    "SubstituteResult",
    "SubstituteRound",
    "SubstituteSettings",
    "TorchOracle",
    "TransferMatrix",
    "as_module",
    "ensemble_classifier",
    "find_oracle",
    "papernot_blackbox",
    "transfer_matrix",
]
