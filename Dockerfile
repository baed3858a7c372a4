# syntax=docker/dockerfile:1
# runsteps worker image: `make image` (docker or podman), or `docker build -t runsteps:0.3.0 .`
# from the repository root.
#
# Two stages: `build` turns the project and every runtime dependency into wheels; `runtime`
# installs only those wheels (no compiler, no build backend, no source tree, no pip cache).
# The runtime image runs as uid/gid 10001 and writes nothing outside /tmp, so it runs with a
# read-only root filesystem (Kubernetes: readOnlyRootFilesystem, an emptyDir at /tmp).
#
# Every runtime dependency comes from requirements.lock (`make lock`), checked against its
# hashes both when downloaded and when installed.
#
# BASE: the official image, pinned by tag and by the digest of its multi-architecture index;
# bump both together. Any image with Python 3.11+, pip and the passwd tools will do, e.g. a
# mirror's copy or the Debian-made base of .ci/base-images (`make image BASE=...`): both
# stages use it and nothing else in the build changes with it.
ARG BASE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE} AS build

# pip checks TLS against the system bundle, so a build behind a TLS-inspecting proxy works by
# mounting the host's bundle there (`make image` does, with podman); a build arg, so it stays
# out of the runtime image.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# .dockerignore lets in only pyproject.toml, requirements.lock, README.md, service/, contracts/.
COPY . .
RUN python -m pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock \
 && python -m pip wheel --no-deps --wheel-dir /wheels . \
 && sha256sum /wheels/*.whl > /wheels/SHA256SUMS


FROM ${BASE} AS runtime

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

# The wheels' checksums, copied so the install below is rebuilt whenever a wheel changes:
# podman (buildah) keys a RUN's cache on its text, not on what it bind-mounts, and reused a
# stale install after the sources changed. Also a record of what the image holds.
COPY --from=build /wheels/SHA256SUMS /usr/local/share/runsteps/wheels.sha256

# Only the wheels from the build stage, bind-mounted so they never land in a layer: the
# locked dependencies (hashes checked again), then the project itself. pip compiles the .pyc
# files now, as root, since the running container cannot write them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.lock,target=/requirements.lock \
    python -m pip install --no-index --find-links /wheels --root-user-action=ignore \
        --require-hashes -r /requirements.lock \
 && python -m pip install --no-index --no-deps --root-user-action=ignore /wheels/runsteps-*.whl

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
