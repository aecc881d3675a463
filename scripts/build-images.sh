#!/usr/bin/env bash
# Build nimctl's CPU image without any container registry (CI, air-gapped sites):
#   1. a Debian bookworm base image from Debian's packages (mmdebstrap | docker import),
#      tagged by a hash of its recipe and reused while the recipe is unchanged;
#   2. a wheelhouse of every Python package the image needs (pip wheel with $PYTHON, which
#      must be the image's Python version: bookworm's 3.11), reused while pyproject.toml,
#      constraints.txt, pip's configuration and that Python are unchanged;
#   3. the CPU image on top, installed from the wheelhouse only (`nimctl build --wheelhouse`).
# A second run with nothing changed takes seconds; a change to nimctl's code rebuilds only
# the image's last layers.
#
# Usage: scripts/build-images.sh [--base-only] [--tag IMAGE]
# Environment: PYTHON (default .venv/bin/python), DEBIAN_MIRROR, WHEELHOUSE
# (default container/context/wheels), NIMCTL_BUILD_ARGS (extra `nimctl build` options).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY="${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
WHEELHOUSE="${WHEELHOUSE:-container/context/wheels}"
SUITE=bookworm
# The image runs Debian bookworm's python3. pip wheel builds for the Python that runs it, so
# the wheelhouse is only installable in the image when that one has the same version.
IMAGE_PYTHON=3.11
BASE_REPO=nimctl/base
# Bump when the recipe below changes in a way the package list does not show.
RECIPE_VERSION=1

base_only=0
tag_args=()
while (($#)); do
    case "$1" in
        --base-only) base_only=1 ;;
        --tag) tag_args=(--tag "$2"); shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "build-images: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

log() { printf 'build-images: %s\n' "$*" >&2; }
now() { date +%s; }

docker info >/dev/null 2>&1 || { log "Docker does not answer: run scripts/ensure-docker.sh first"; exit 1; }
if [[ $base_only == 0 ]]; then
    # Checked first: finding it out after the base image was built, or at the offline install
    # inside the image (pip: "no matching distribution"), wastes minutes and says little.
    python_version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
        || { log "PYTHON=$PYTHON does not run: make .venv with scripts/setup.sh, or set PYTHON"; exit 2; }
    if [[ "$python_version" != "$IMAGE_PYTHON" ]]; then
        log "PYTHON=$PYTHON is Python $python_version, but the image runs Debian $SUITE's Python $IMAGE_PYTHON:"
        log "the wheels it builds would not install there. Set PYTHON to a Python $IMAGE_PYTHON with nimctl"
        log "installed: e.g. rm -rf .venv && PYTHON=python$IMAGE_PYTHON scripts/setup.sh, then run this again."
        exit 2
    fi
fi

# --- 1. the base image --------------------------------------------------------------------------
packages="$(grep -v '^#' container/os-packages.txt | xargs)"
recipe_hash="$(printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY" "$packages" \
    | sha256sum | cut -c1-12)"
base_image="$BASE_REPO:$SUITE-$recipe_hash"
if docker image inspect "$base_image" >/dev/null 2>&1; then
    log "base image $base_image is up to date"
else
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        if [[ $(id -u) -ne 0 ]]; then
            log "mmdebstrap is missing: install it (sudo apt-get install mmdebstrap), or run this as root"
            exit 1
        fi
        log "installing mmdebstrap (apt-get)"
        # Its output stays visible: a failing mirror or a held package is explained there.
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap \
            || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap; }
    fi
    log "building $base_image from Debian $SUITE packages: ${packages// /, }"
    start=$(now)
    # Docs, man pages and locales are dropped: nothing in the image reads them.
    # --mode=auto: a real chroot as root, user namespaces otherwise.
    mmdebstrap --variant=minbase --mode=auto --quiet \
        --include="${packages// /,}" \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" - \
        "deb $DEBIAN_MIRROR $SUITE main" \
        "deb $DEBIAN_MIRROR $SUITE-updates main" \
        "deb $DEBIAN_SECURITY $SUITE-security main" \
        | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["/bin/bash"]' \
            --message "nimctl base: Debian $SUITE minbase + $packages" \
            - "$base_image" >/dev/null
    log "base image built in $(($(now) - start))s"
fi
docker tag "$base_image" "$BASE_REPO:$SUITE"
[[ $base_only == 1 ]] && exit 0

# --- 2. the wheelhouse --------------------------------------------------------------------------
mkdir -p "$WHEELHOUSE"
requirements="$("$PYTHON" -m nimctl.runtime.source cpu)"
# pip's own configuration (here: find-links and constraints) changes what it resolves, and the
# interpreter (version, ABI, machine) which wheels it picks or builds.
interpreter="$("$PYTHON" -c 'import platform, sys; print(sys.implementation.cache_tag, platform.machine(), *platform.libc_ver())')"
wheel_hash="$( { printf '%s\n' "$requirements" "$interpreter"; cat constraints.txt 2>/dev/null;
    "$PYTHON" -m pip config list 2>/dev/null; cat /etc/xdg/pip/constraints.txt 2>/dev/null; } | sha256sum | cut -c1-12)"
if [[ -f "$WHEELHOUSE/.stamp" && "$(cat "$WHEELHOUSE/.stamp")" == "$wheel_hash" ]]; then
    log "wheelhouse $WHEELHOUSE is up to date ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
else
    log "filling the wheelhouse $WHEELHOUSE (pip wheel)"
    start=$(now)
    printf '%s\n' "$requirements" > "$WHEELHOUSE/requirements.txt"
    constraint_args=()
    [[ -f constraints.txt ]] && constraint_args=(-c constraints.txt)
    # pip warns about every configured index folder that lacks a package: noise, dropped.
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELHOUSE" \
        -r "$WHEELHOUSE/requirements.txt" "${constraint_args[@]}" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    printf '%s' "$wheel_hash" > "$WHEELHOUSE/.stamp"
    log "wheelhouse filled in $(($(now) - start))s ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
fi

# --- 3. the CPU image ---------------------------------------------------------------------------
# shellcheck disable=SC2086  # NIMCTL_BUILD_ARGS is a list of options on purpose
"$PYTHON" -m nimctl build --device cpu --base-image "$base_image" --wheelhouse "$WHEELHOUSE" \
    "${tag_args[@]}" ${NIMCTL_BUILD_ARGS:-}
