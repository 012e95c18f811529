"""Local fixtures: skip the slow git call of provenance() (it is tested in tests/reports and the CLI tests)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fast_provenance(monkeypatch):
    import advlab.evaluation.engine as engine

    monkeypatch.setattr(engine, "provenance", lambda **extra: {"versions": {}, "git_commit": None, **extra})
