#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, installing and starting it if needed.
#
# Idempotent: does nothing when `docker info` already works and Compose is there. Otherwise
# installs Debian's docker.io when dockerd is missing, starts dockerd in the background (log in
# $DOCKERD_LOG) and waits, bounded by $DOCKER_WAIT_S, until the daemon answers; and installs
# Debian's docker-compose (1.29, the `docker-compose` command) when neither it nor the
# `docker compose` plugin is there (tests/docker/test_compose_generated.py runs what
# `nimctl generate compose` writes).
# Needs root for the installs and the start (CI machines and throwaway VMs).
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKER_WAIT_S="${DOCKER_WAIT_S:-60}"

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

daemon_answers() { docker info >/dev/null 2>&1; }

has_compose() { command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; }

ensure_compose() {
    if has_compose; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "Docker Compose is missing and installing it needs root; run: sudo $0"
        exit 1
    fi
    log "installing docker-compose from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker-compose >/dev/null
    if ! has_compose; then
        log "docker-compose is still missing after installing Debian's package"
        exit 1
    fi
    log "installed docker-compose $(docker-compose version --short 2>/dev/null)"
}

if command -v docker >/dev/null 2>&1 && daemon_answers; then
    log "Docker daemon already answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    ensure_compose
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    log "the Docker daemon does not answer and starting it needs root; run: sudo $0"
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi

if ! daemon_answers; then
    # A dockerd may be starting already (another job, or a socket left behind by a dead one).
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        log "starting dockerd (log: $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        # setsid: the daemon must outlive this script and CI's process group.
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 < /dev/null &
    fi
    deadline=$((SECONDS + DOCKER_WAIT_S))
    until daemon_answers; do
        if ((SECONDS >= deadline)); then
            log "dockerd did not answer within ${DOCKER_WAIT_S}s; last lines of $DOCKERD_LOG:"
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 1
    done
fi

log "Docker daemon answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
ensure_compose
