"""Fixtures for the report tests: one small evaluation of the toy margin model (no git call, no checks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))


@pytest.fixture(scope="module")
def toy_report():
    from _evaltoy import ShiftA, ShiftB, toy_data, toy_model

    import advlab.evaluation.engine as engine

    saved = engine.provenance
    engine.provenance = lambda **extra: {"versions": {"advlab": "test"}, "git_commit": "abc123", **extra}
    try:
        x, y, _ = toy_data(n=30, n_wrong=3)
        report = engine.evaluate(toy_model(), (x, y), [0.05, 0.15, 0.3], attacks=[ShiftA(), ShiftB()], checks=False)
    finally:
        engine.provenance = saved
    report.classes = ["negative", "positive"]
    return report
