# One image for every Chordal process; the command picks the role:
#   chordal worker --router | chordal worker --tier fast|balanced|premium
#   chordal exporter --port 9808 | chordal sim | celery --app workers.app flower
FROM python:3.11-slim

# LiteLLM would download its price map at import: the bundled copy keeps start-up offline.
# CHORDAL_DATA_DIR holds the simulator's profiles and other local state, writable by chordal.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    CHORDAL_DATA_DIR=/var/lib/chordal

# A numeric uid, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 chordal \
    && useradd --system --uid 10001 --gid chordal --create-home --home-dir /home/chordal chordal \
    && install -d -o chordal -g chordal /var/lib/chordal

WORKDIR /src
COPY pyproject.toml README.md celeryconfig.py ./
COPY chordal ./chordal
COPY agents ./agents
COPY routing ./routing
COPY workers ./workers
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info

# Run from a folder without the sources: every process imports the installed package.
WORKDIR /home/chordal
USER 10001:10001

# Worker /metrics (CHORDAL_METRICS_PORT), exporter, simulator, Flower.
EXPOSE 9100 9808 8765 5555

ENTRYPOINT ["chordal"]
CMD ["--help"]
