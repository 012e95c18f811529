"""Reports: figures (matplotlib, Agg backend) and self-contained HTML/JSON pages for evaluations.

Examples:
    >>> from advlab.reports import write_report
    >>> write_report(advlab.evaluate(model, (x, y), [0.1, 0.3]), "runs/eval")
"""

from advlab.reports.figures import attack_bars, example_grid, robustness_curve
from advlab.reports.html import (
    comparison,
    load_report,
    render_comparison,
    render_report,
    write_comparison,
    write_report,
)

__all__ = [
    "attack_bars",
    "comparison",
    "example_grid",
    "load_report",
    "render_comparison",
    "render_report",
    "robustness_curve",
    "write_comparison",
    "write_report",
]
