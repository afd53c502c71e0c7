# Chordal's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BROWSER := $(VENV)/.browser-stamp

.PHONY: install demo dev test lint unit integration bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install Chordal with its dev tools.

# The Flower test drives Debian's Chromium (never a downloaded browser). As root, install it;
# otherwise say how, and that test skips itself.
$(BROWSER): $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the Flower browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "no chromium: run 'apt-get install chromium chromium-driver'; the Flower test will skip"; \
	  fi; }
	touch $@

demo: $(STAMP)  ## Start broker, simulator and workers; run one job; print answer and cost.
	$(VENV)/bin/chordal demo

dev: $(STAMP)  ## Run the local stack until Ctrl-C.
	$(VENV)/bin/chordal dev

lint: $(STAMP)  ## ruff (lint + format) and mypy.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint $(BROWSER)  ## Lint, then every test (unit and integration).
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP) $(BROWSER)
	$(PY) -m pytest tests/integration

bench: $(STAMP)  ## Tier-worker concurrency vs bare LiteLLM asyncio, router decision cost.
	$(PY) -m bench.concurrency
	$(PY) -m bench.router

clean:
	rm -rf $(VENV) .chordal .pytest_cache .mypy_cache .ruff_cache
