# rotator: the container image for `rotator run` (daemon, the default) and `rotator once` (CronJob).
#
#   docker build -t rotator:0.1.0 .                       # every store backend (EXTRAS=all)
#   docker build --build-arg EXTRAS=aws -t rotator:aws .  # only what the AWS store needs (smaller)
#   docker build --build-arg EXTRAS= -t rotator:slim .    # file store only
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .   # the OCI labels
#   docker run --rm -v "$PWD/rotator.yaml:/etc/rotator/rotator.yaml:ro" -e MOMENTO_MANAGEMENT_KEY rotator:0.1.0
#
# The final stage holds the Python runtime and one virtualenv (/opt/venv), nothing else: no compiler, no
# pip cache, no source tree. It runs as the numeric user 10001 and writes nothing to its own filesystem
# (the .pyc files are compiled at build time), so it runs with a read-only root filesystem; give it a
# writable volume only where the config points at one (e.g. a file store under /var/lib/rotator).
# tests/test_deploy.py lints this file with hadolint and builds "the same install" in a fresh venv.

# ---- builder: a wheel of the project, installed with its extras into /opt/venv ----------------------------
FROM python:3.11-slim-bookworm AS builder

ARG EXTRAS=all
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# only what the wheel is built from (see .dockerignore): a change to tests or docs does not rebuild it
COPY pyproject.toml README.md ./
COPY rotator ./rotator

# pip compiles the .pyc files while installing, so the read-only image never has to write them
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
 && python -m venv /opt/venv \
 && wheel="$(ls /dist/momento_rotator-*.whl)" \
 && /opt/venv/bin/pip install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}" \
 && /opt/venv/bin/rotator --version

# ---- runtime ------------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

# set by the release (.github/workflows/release.yml): the version, the commit and the repository, which
# registries and Renovate read from the image's OCI labels (a local build leaves the last two empty)
ARG VERSION=0.1.0
ARG REVISION=
ARG SOURCE=
LABEL org.opencontainers.image.title="rotator" \
      org.opencontainers.image.description="Rotates Momento API keys before they expire, across AWS, Azure, GCP and local secret stores." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ROTATOR_CONFIG=/etc/rotator/rotator.yaml

# a numeric user and group (Kubernetes' runAsNonRoot can only check a numeric USER); no home, no shell.
# /var/lib/rotator is the one place meant for writable data (mount a volume there for a file store).
RUN groupadd --system --gid 10001 rotator \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin rotator \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/rotator \
 && install -d -m 0755 /etc/rotator

COPY --from=builder /opt/venv /opt/venv

WORKDIR /var/lib/rotator
USER 10001:10001

# /healthz, /readyz and /metrics of `rotator run` (http.listen: "0.0.0.0:9464" in the config to reach it
# from outside the container; the default 127.0.0.1:9464 serves the container itself only)
EXPOSE 9464

ENTRYPOINT ["rotator"]
CMD ["run"]
