"""``advlab report``: put several evaluations side by side in one HTML page and one JSON file."""

from __future__ import annotations

import argparse
import logging

from advlab.cli._common import add_command, check_output_dir, output_dir

log = logging.getLogger("advlab")

EXAMPLES = """\
  advlab report runs/m1-eval runs/m2-eval --out runs/compare
  advlab report runs/std-eval runs/pgd-eval --labels standard,pgd-trained --out runs/compare
  advlab report runs/m1-eval --out runs/m1-eval   # re-render one evaluation's report.html from its JSON
"""


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "report",
        "compare evaluations side by side (HTML + JSON)",
        "Read the report.json of each evaluation folder (written by 'advlab evaluate') and write "
        "DIR/comparison.html (all models on one robust-accuracy-versus-eps plot, and a table with confidence "
        "intervals) and DIR/comparison.json. With one folder, also re-renders its report.html. Evaluations of "
        "different data are compared with a warning: their numbers are not measured on the same examples.",
        EXAMPLES,
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="evaluation folders (or their report.json files)")
    p.add_argument(
        "--labels",
        default=None,
        help="comma-separated names for the models (default: the architecture; where it repeats, "
        "with the model folder, then the preset)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab.reports import load_report, write_comparison, write_report

    check_output_dir(args.out)
    reports = [load_report(d) for d in args.dirs]
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    out = output_dir(args.out)
    json_path, html_path = write_comparison(reports, out, labels)
    if len(reports) == 1:
        write_report(reports[0], out)
    log.info("wrote %s and %s", json_path, html_path)
    return 0
