"""The report of an attack sweep on a reinforcement-learning policy: return versus eps, per attack and timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advlab.reports.figures import PALETTE, plt, save_png
from advlab.reports.study import Figure, Study, Table
from advlab.rl.sweep import RLSweep

STYLES = {"fgsm": "-", "pgd": "--", "random": ":"}


def return_figure(result: RLSweep) -> bytes:
    """PNG: mean episode return versus eps, one line per (method, timing): a colour per timing, a line style per
    method (FGSM solid, PGD dashed, random dotted); the clean return dashed grey.

    Args:
        result: a sweep.

    Examples:
        >>> png = return_figure(sweep(policy, [0, 0.1, 0.2]))
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    timings = list(dict.fromkeys(c.timing for c in result.curves))
    for c in result.curves:
        ax.errorbar(
            c.eps,
            c.mean_return,
            yerr=c.std_return,
            label=f"{c.method} ({c.timing})",
            color=PALETTE[timings.index(c.timing) % len(PALETTE)],
            linestyle=STYLES.get(c.method, "-"),
            marker="o",
            markersize=3,
            capsize=2,
        )
    ax.axhline(result.clean_return, color="#9ca3af", linestyle="--", linewidth=1, label="clean")
    ax.set_xlabel("eps (L∞, units of each observation dimension's std over visited states)")
    ax.set_ylabel(f"mean return over {result.episodes} episodes")
    ax.set_title(f"{result.env}: return under observation attacks")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, None)


def rl_study(result: RLSweep, record: dict[str, Any]) -> Study:
    """The :class:`~advlab.reports.study.Study` page of a sweep (a table of returns and the return-vs-eps figure).

    Args:
        result: the sweep.
        record: the JSON record (the sweep plus settings and provenance).
    """
    rows = [
        [f"{c.method} ({c.timing})", f"{e:g}", f"{m:.1f} ± {s:.1f}", f"{100 * f:.0f}%"]
        for c in result.curves
        for e, m, s, f in zip(c.eps, c.mean_return, c.std_return, c.attack_frequency)
    ]
    table = Table(
        f"Clean return {result.clean_return:.1f} ± {result.clean_std:.1f}. Attack frequency: the measured share of "
        "steps whose observation was perturbed.",
        ["attack (timing)", "eps", "mean return ± std", "attack frequency"],
        rows,
    )
    figure = Figure(
        "Return versus eps",
        return_figure(result),
        "Huang et al. 2017: small adversarial perturbations of the observations collapse a policy's return, random "
        "noise of the same size does little. eps is in units of each dimension's spread over visited states.",
    )
    subtitle = f"{result.episodes} seeded episodes per point · seed {result.seed} · L∞ budgets in observation-std units"
    return Study(
        "rl", f"{result.env}: a policy under observation attacks", subtitle, record, result.seconds, [table], [figure]
    )


def write_rl_report(result: RLSweep, out: str | Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``rl.json``, ``rl.png`` and ``rl.html`` into ``out``; return the JSON and HTML paths.

    Args:
        result: the sweep.
        out: the output folder.
        record: the JSON record.

    Examples:
        >>> write_rl_report(result, "runs/rl", {"sweep": result.to_dict()})
    """
    return rl_study(result, record).write(out, "rl")
