# One image for every Chordal process; the command picks the role:
#   chordal worker --router | chordal worker --tier fast|balanced|premium
#   chordal gateway --host 0.0.0.0 | chordal exporter --addr 0.0.0.0 | chordal sim
#   celery --app workers.app flower | chordal bench
# Build: docker build -t chordal:local .   (podman: add --format docker, or OCI drops HEALTHCHECK)
# The local tier's llama.cpp server is not in it: a cluster serves that model itself (vLLM,
# Ollama) and points CHORDAL_LOCAL_MODEL_URL at it (k8s/README.md).

# --- builder: every dependency as pinned, with hashes, in requirements.lock (`make lock`) ----
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies before the sources: this layer is rebuilt only when the lock changes. Every
# package of the lock is pinned with its hashes (pip refuses anything else with
# --require-hashes), so --no-deps loses nothing.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock

COPY pyproject.toml README.md celeryconfig.py ./
COPY chordal ./chordal
COPY agents ./agents
COPY routing ./routing
COPY workers ./workers
COPY bench ./bench
# Chordal itself, from a wheel built here; its dependencies are all in the lock above.
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/chordal-*.whl \
    && /opt/venv/bin/pip check

# --- runtime: the venv, no compilers, no sources, no pip cache ------------------------------
FROM python:3.11-slim

# LiteLLM would download its price map at import: the bundled copy keeps start-up offline.
# CHORDAL_DATA_DIR holds the simulator's profiles and other local state, writable by chordal.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    CHORDAL_DATA_DIR=/var/lib/chordal

# A numeric uid, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 chordal \
    && useradd --system --uid 10001 --gid chordal --create-home --home-dir /home/chordal chordal \
    && install -d -o chordal -g chordal /var/lib/chordal

COPY --from=builder /opt/venv /opt/venv

# Run from a folder without the sources: every process imports the installed package.
WORKDIR /home/chordal
USER 10001:10001

# Worker /metrics (CHORDAL_METRICS_PORT), gateway, exporter, simulator, Flower.
EXPOSE 9100 8080 9808 8765 5555

# `chordal health` reads this container's command (PID 1) and asks that role's own endpoint:
# a worker's /metrics (up once warmed), the gateway's and exporter's /healthz (never the
# broker: a broker outage must not restart them), the simulator's /health, Flower's
# /healthcheck. One-off commands (bench, submit) have nothing to check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 CMD ["chordal", "health"]

ENTRYPOINT ["chordal"]
CMD ["--help"]
