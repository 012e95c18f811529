# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each bootstraps .venv on its own: torch first (the pinned CPU build), then advlab with its extras.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# The offline datasets beside the checkout, when present (see ../shared/data/README.md).
SHARED_DATA := $(abspath ../shared/data)
export ADVLAB_DATA ?= $(if $(wildcard $(SHARED_DATA)/mnist),$(SHARED_DATA),)
# Tests run with pytest-xdist on every core; override with `make test WORKERS=1`.
WORKERS ?= auto

.PHONY: demo test lint docs bench clean venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[test,lint,docs,rl]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/advlab demo --out runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -n $(WORKERS) -q

# The lint and type gate: formatting, lint rules, layers and cycles, types. .ci/run runs it before the tests.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The API reference built from the docstrings; --strict fails on a broken reference.
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

bench: $(VENV)/.installed
	$(PY) bench/pgd_speed.py

clean:
	rm -rf $(VENV) runs bench/out .pytest_cache build/site
