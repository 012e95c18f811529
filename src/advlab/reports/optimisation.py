"""The report of a model-based-optimisation study: predicted versus true score of the designs found, per variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advlab.optimisation.study import MBOResult
from advlab.reports.figures import PALETTE, plt, save_png
from advlab.reports.study import Figure, Study, Table


def ascent_figure(result: MBOResult) -> bytes:
    """PNG: predicted (solid) and true (dashed) mean score along the ascent per variant, and the distance out of the
    data domain; reference lines at the true optimum, the best design inside the domain and the data's best.

    Args:
        result: a study.

    Examples:
        >>> png = ascent_figure(run_study())
    """
    fig, (ax, ax_ood) = plt.subplots(1, 2, figsize=(11, 4.0), gridspec_kw={"width_ratios": [3, 2]})
    for i, v in enumerate(result.variants):
        colour, label = (
            PALETTE[i % len(PALETTE)],
            f"{v.surrogate}, {'in domain' if v.constraint == 'domain' else 'free'}",
        )
        steps = v.trajectory["steps"]
        ax.plot(steps, v.trajectory["predicted"], color=colour, label=f"{label}: predicted")
        ax.plot(steps, v.trajectory["true"], color=colour, linestyle="--", label=f"{label}: true")
        ax_ood.plot(steps, v.trajectory["out_of_domain"], color=colour, label=label)
    ax.axhline(result.optimum_value, color="#111827", linewidth=0.8, linestyle=":", label="true optimum")
    ax.axhline(result.domain_optimum_value, color="#6b7280", linewidth=0.8, linestyle=":", label="best in domain")
    ax.axhline(result.data_best, color="#9ca3af", linewidth=0.8, linestyle="-.", label="best in data")
    ax.set_xlabel("ascent step")
    ax.set_ylabel("mean score of the designs")
    ax.set_title("surrogate's prediction (solid) vs the true score (dashed)")
    ax.legend(fontsize=6.5, ncol=2, loc="best")
    ax.grid(alpha=0.3)
    ax_ood.set_xlabel("ascent step")
    ax_ood.set_ylabel("mean L2 distance out of the data domain")
    ax_ood.set_title("how far the designs leave the data")
    ax_ood.legend(fontsize=7)
    ax_ood.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, None)


def optimisation_study(result: MBOResult, record: dict[str, Any]) -> Study:
    """The :class:`~advlab.reports.study.Study` page of a study (a table per variant and the ascent figure).

    Args:
        result: the study.
        record: the JSON record (the result plus provenance).
    """
    rows = [
        [
            f"{v.surrogate}, {'in domain' if v.constraint == 'domain' else 'free'}",
            f"{v.predicted:.3f}",
            f"{v.true:.3f}",
            f"{v.predicted - v.true:+.3f}",
            f"{v.best_true:.3f}",
            f"{v.out_of_domain:.3f}",
            f"{v.test_mse:.4f}",
        ]
        for v in result.variants
    ]
    table = Table(
        f"Mean over the {result.settings['starts']} starting designs (the data's best; their true mean "
        f"{result.start_mean:.3f}). True optimum {result.optimum_value:.3f}; best design inside the data domain "
        f"{result.domain_optimum_value:.3f}; best design in the data {result.data_best:.3f}. Test MSE: the surrogate's "
        "error on fresh designs from the domain.",
        ["surrogate, constraint", "predicted", "true", "overestimate", "best true", "out of domain (L2)", "test MSE"],
        rows,
    )
    figure = Figure(
        "Predicted versus true score along the ascent",
        ascent_figure(result),
        "Optimising a design for a surrogate's prediction leaves the data's domain, where the prediction keeps rising "
        "and the true score does not; keeping the designs in the domain, or a surrogate trained against the designs "
        "it overrates, narrows the gap.",
    )
    p = result.problem
    subtitle = f"design space [0, 1]^{p['dim']} · data domain [{p['low']}, {p['high']}]^{p['dim']} · seed {p['seed']}"
    return Study("mbo", "Model-based optimisation, honestly", subtitle, record, result.seconds, [table], [figure])


def write_optimisation_report(result: MBOResult, out: str | Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``mbo.json``, ``mbo.png`` and ``mbo.html`` into ``out``; return the JSON and HTML paths.

    Args:
        result: the study.
        out: the output folder.
        record: the JSON record.

    Examples:
        >>> write_optimisation_report(result, "runs/mbo", {"study": result.to_dict()})
    """
    return optimisation_study(result, record).write(out, "mbo")
