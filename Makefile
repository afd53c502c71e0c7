# Chordal's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo dev test lint unit integration bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install Chordal with its dev tools.

demo: $(STAMP)  ## Start broker, simulator and workers; run one job; print answer and cost.
	$(VENV)/bin/chordal demo

dev: $(STAMP)  ## Run the local stack until Ctrl-C.
	$(VENV)/bin/chordal dev

lint: $(STAMP)  ## ruff (lint + format) and mypy.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint  ## Lint, then every test (unit and integration).
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

bench: $(STAMP)  ## Tier-worker concurrency vs bare LiteLLM asyncio (see bench/README.md).
	$(PY) -m bench.concurrency

clean:
	rm -rf $(VENV) .chordal .pytest_cache .mypy_cache .ruff_cache
