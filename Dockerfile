# syntax=docker/dockerfile:1
#
# replicator: DynamoDB Streams -> cross-region table replication service.
#
#   docker build -t replicator .
#   docker run --rm -v "$PWD/config.yaml:/etc/replicator/config.yaml:ro" -p 9108:9108 replicator
#   docker run --rm -e REPLICATOR_SOURCE__REGION=... -e REPLICATOR_TARGET__TABLE=... replicator check-config
#
# Two stages: the builder installs the locked dependencies (requirements.lock: exact versions and
# hashes, so a rebuild gets the same bytes) and the package into a venv; the final stage copies only
# that venv, so no compiler, pip, setuptools, cache or source tree ships.
#
# The base image is pinned by digest as well as tag: the tag alone moves with every upstream rebuild.
# The digest is the multi-arch index of python:3.11.14-slim-bookworm as published references give it;
# it was not pulled on the development machine (no Docker engine there). Check or refresh it with
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm
# (the "Digest:" line, the index, so both amd64 and arm64 tasks resolve it).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
WORKDIR /src
# The lock alone first: this layer (the slow one) is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY replicator ./replicator
# Non-editable install (pip byte-compiles it), so the venv is independent of /src; --no-deps: every
# dependency came from the lock above. `--help` fails the build if the console script cannot import.
# Then pip and setuptools leave the venv: nothing installs packages at run time.
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/replicator --help > /dev/null \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel


FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="replicator" \
      org.opencontainers.image.description="Replicates a DynamoDB table's stream into a table in another region" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# tini as PID 1: the kernel ignores signals that PID 1 has no handler for, so until Python has
# installed its SIGTERM handler (imports, config load) a `docker stop`/ECS stop would be ignored
# until SIGKILL. tini forwards SIGTERM to the replicator and reaps any child (e.g. an AWS
# credential_process helper). The slim image has no tini; Debian's package is ~60 kB.
# DL3008 (pin apt versions) is ignored: an exact Debian version disappears from the mirror at the
# next security update and breaks the build; the bookworm base tag already fixes the release.
# The base image's own pip and setuptools go too (the replicator runs from /opt/venv).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && python -m pip uninstall --yes pip setuptools wheel \
    && rm -rf /root/.cache

# A fixed numeric uid/gid so mounted config/secret files can be granted to it, and so
# Kubernetes-style runAsNonRoot checks can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 replicator \
    && useradd --system --uid 10001 --gid replicator --home-dir /var/lib/replicator \
       --create-home --shell /usr/sbin/nologin replicator \
    && mkdir -p /etc/replicator \
    && chown replicator:replicator /etc/replicator

COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# No REPLICATOR_* defaults here: environment variables override the mounted config file, so an
# image default would silently beat the operator's file. The built-in defaults already fit a
# container (metrics on 0.0.0.0:9108); set logging.format=json in the file or the task definition.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
# The default sqlite checkpoints land in ./state/ here; mount a volume on /var/lib/replicator to
# keep them across containers, or (ECS) use checkpoint.backend=dynamodb.
WORKDIR /var/lib/replicator

# /metrics, /healthz and /readyz.
EXPOSE 9108

# /healthz answers while the process is alive; readiness (/readyz) is for load balancers and
# rollouts, not for restarts. python, not curl: the slim image has no curl. A metrics.port other
# than 9108 set in the config file must also be given as REPLICATOR_METRICS__PORT for this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REPLICATOR_METRICS__PORT', '9108'), timeout=4)"]

# The replicator drains in-flight writes and saves checkpoints within 30 s of SIGTERM;
# give the runtime's stop timeout more than that (ECS stopTimeout 60, `docker stop -t 60`).
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["run"]
