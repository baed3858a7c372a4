# syntax=docker/dockerfile:1
# runsteps worker image: `docker build -t runsteps:0.1.0 .` from the repository root.
#
# Two stages: `build` turns the project and every runtime dependency into wheels; `runtime`
# installs only those wheels (no compiler, no build backend, no source tree, no pip cache).
# The runtime image runs as uid/gid 10001 and writes nothing outside /tmp, so it runs with a
# read-only root filesystem (Kubernetes: readOnlyRootFilesystem, an emptyDir at /tmp).
#
# The base is pinned to an exact tag. Pin it by digest as well when publishing
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`), and bump both together.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# .dockerignore lets in only pyproject.toml, README.md, service/ and contracts/.
COPY . .
RUN pip wheel --wheel-dir /wheels .


FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="runsteps" \
      org.opencontainers.image.description="Tracks OpenAI-style run-step lifecycles from a Redis stream" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUNSTEPS_HTTP_PORT=8080

RUN groupadd --system --gid 10001 runsteps \
 && useradd --system --uid 10001 --gid runsteps --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin runsteps

# Only the wheels from the build stage, bind-mounted so they never land in a layer. pip
# compiles the .pyc files now, as root, since the running container cannot write them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --root-user-action=ignore /wheels/*.whl

# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080

# Liveness of the HTTP port (slim has no curl): GET /healthz on the configured port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RUNSTEPS_HTTP_PORT', '8080'), timeout=2)"]

# Exec form: the worker is PID 1 and receives SIGTERM itself (graceful shutdown).
ENTRYPOINT ["runsteps"]
CMD ["worker"]
