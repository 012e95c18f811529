# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each bootstraps .venv on its own: torch first (the pinned CPU build), then advlab with its test extras.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# The offline datasets beside the checkout, when present (see ../shared/data/README.md).
SHARED_DATA := $(abspath ../shared/data)
export ADVLAB_DATA ?= $(if $(wildcard $(SHARED_DATA)/mnist),$(SHARED_DATA),)
# Tests run with pytest-xdist on every core; override with `make test WORKERS=1`.
WORKERS ?= auto

.PHONY: demo test bench clean venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/advlab demo --out runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -n $(WORKERS) -q

bench: $(VENV)/.installed
	$(PY) bench/pgd_speed.py

clean:
	rm -rf $(VENV) runs bench/out .pytest_cache
