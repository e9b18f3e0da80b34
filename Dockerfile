# syntax=docker/dockerfile:1
# firesale: one image for every process (`firesale connect`, `firesale worker`,
# `firesale topics create`). Kafka is not in it: no Java here, the broker runs as its own
# container (deploy/docker-compose.yml) or cluster (deploy/k8s/).
#
#   docker build -t firesale .
#   docker run --rm -e FIRESALE_KAFKA_BOOTSTRAP=kafka:9092 -p 9464:9464 firesale worker

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the project and every dependency as wheels (all ship manylinux wheels for
# CPython 3.11, so no compiler is needed) -------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md is the package's long description (pyproject `readme`), so the build needs it.
COPY pyproject.toml README.md ./
COPY connectors/ connectors/
COPY signals/ signals/
COPY streams/ streams/
# deploy.kafka is imported by the CLI (bootstrap resolution); only the package, not the
# manifests beside it.
COPY deploy/__init__.py deploy/
COPY deploy/kafka/ deploy/kafka/
RUN pip wheel --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG FIRESALE_UID=10001
# /var/lib/firesale (working directory, HOME) and /var/cache/firesale (FIRESALE_CACHE_DIR:
# venue-market cache, faust's data directory) are the only places the processes write, so the
# root filesystem can be mounted read-only with these two as volumes (deploy/k8s/, compose).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/var/lib/firesale \
    FIRESALE_CACHE_DIR=/var/cache/firesale \
    FIRESALE_METRICS_BIND=0.0.0.0 \
    FIRESALE_METRICS_PORT=9464
RUN groupadd --system --gid "${FIRESALE_UID}" firesale \
    && useradd --system --uid "${FIRESALE_UID}" --gid firesale --no-create-home \
        --home-dir /var/lib/firesale --shell /usr/sbin/nologin firesale \
    && mkdir -p /var/lib/firesale /var/cache/firesale \
    && chown firesale:firesale /var/lib/firesale /var/cache/firesale
# Exactly the wheels the build stage resolved (no index: nothing is re-resolved here), bind-
# mounted so they leave no layer behind.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --no-deps /wheels/*.whl \
    && pip check
WORKDIR /var/lib/firesale
USER ${FIRESALE_UID}:${FIRESALE_UID}
EXPOSE 9464
# The /metrics endpoint answers once the process has reached Kafka (connect resolves the
# venue markets first, hence the start period). Python's urllib: the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FIRESALE_METRICS_PORT', '9464') + '/metrics', timeout=4).read(1)"]
ENTRYPOINT ["firesale"]
CMD ["worker"]
