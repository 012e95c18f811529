"""gymnasium is optional: advlab.rl imports without it, and using it without gymnasium is one line naming the extra.

These tests run whether or not gymnasium is installed (they simulate its absence).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from advlab.cli import main
from advlab.rl import GymnasiumMissing, make_env


def test_without_gymnasium_a_one_line_message_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # what `import gymnasium` sees when it is not installed
    with pytest.raises(GymnasiumMissing, match=r"pip install 'advlab\[rl\]'"):
        make_env("CartPole-v1")
    assert main(["rl", "--episodes", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'advlab[rl]'" in err


def test_advlab_rl_imports_without_gymnasium():
    code = (
        "import sys; sys.modules['gymnasium'] = None; import advlab.rl, advlab.cli.rl, advlab.reports.rl; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
