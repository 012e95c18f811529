"""Model-based optimisation: optimising a design for a surrogate's predicted score, with standard and robust surrogates.

A known design function (:class:`DesignProblem`, optimum documented) gives the data (samples from a part of the
design space) and the truth; surrogates are trained on the data, designs are optimised for the surrogate's
prediction by gradient ascent, and what was found is scored with the known function: the out-of-domain failure
(the prediction rises while the true score falls) is measured, not assumed.

Examples:
    >>> from advlab.optimisation import DesignProblem, MBOSettings, run_study
    >>> result = run_study(DesignProblem(dim=12), MBOSettings())
    >>> [(v.surrogate, v.constraint, v.predicted, v.true) for v in result.variants]
"""

from advlab.optimisation.ascent import Trajectory, ascend
from advlab.optimisation.design import DesignProblem
from advlab.optimisation.study import MBOResult, MBOSettings, Variant, run_study
from advlab.optimisation.surrogate import ScoreAsLogits, Surrogate, fit_surrogate, highest_scored

__all__ = [
    "DesignProblem",
    "MBOResult",
    "MBOSettings",
    "ScoreAsLogits",
    "Surrogate",
    "Trajectory",
    "Variant",
    "ascend",
    "fit_surrogate",
    "highest_scored",
    "run_study",
]
