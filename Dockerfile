# One image for the Python services of docker-compose.yml (devices, gateway, platform,
# report): the wheel of this repository and its dependencies pinned by constraints.txt,
# run as a non-root user. docs/compose.md explains the build without registry access.
#
#   docker build -t iiotbed:local .                   # python:3.11-slim from a registry
#   docker build --build-arg PYTHON_IMAGE=iiotbed/debian:bookworm -t iiotbed:local .
#
# Few steps on purpose: with the vfs storage driver (a Docker engine inside a container or
# VM) every step copies the whole file system once.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtual environment with the pinned dependencies, then the wheel in it
FROM ${PYTHON_IMAGE} AS build
# docker/ca/pip-ca.crt, when present: the CA of an HTTPS-intercepting proxy (this stage only)
COPY docker/ca/ /tmp/ca/
COPY pyproject.toml constraints.txt README.md /src/
# the dependencies from the project's metadata alone: this layer survives source edits
RUN set -eu; \
    if [ -s /tmp/ca/pip-ca.crt ]; then export PIP_CERT=/tmp/ca/pip-ca.crt; fi; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1; \
    python3 -m venv /opt/iiotbed; \
    python3 -c 'import tomllib; \
print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt; \
    /opt/iiotbed/bin/pip install -q -c /src/constraints.txt -r /tmp/requirements.txt
COPY src/ /src/src/
RUN set -eu; \
    if [ -s /tmp/ca/pip-ca.crt ]; then export PIP_CERT=/tmp/ca/pip-ca.crt; fi; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1; \
    /opt/iiotbed/bin/pip wheel -q --no-deps -w /wheels /src; \
    /opt/iiotbed/bin/pip install -q --no-deps -c /src/constraints.txt /wheels/iiotbed-*.whl; \
    /opt/iiotbed/bin/iiotbed --version

# ---- the published image: the virtual environment, the scenarios, a non-root user
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /home/iiotbed iiotbed \
    && mkdir -p /data && chown iiotbed:iiotbed /data
COPY --from=build /opt/iiotbed /opt/iiotbed
COPY scenarios/ /scenarios/
ENV PATH=/opt/iiotbed/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER iiotbed
WORKDIR /data
ENTRYPOINT ["iiotbed"]
CMD ["--help"]
