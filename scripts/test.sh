#!/usr/bin/env bash
# The whole test suite on a fresh machine: install nimctl and the test tools, start Docker and
# build the images the container tests use (and install Docker Compose, for the generated Compose
# file), then run ruff and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k health). NIMCTL_SKIP_DOCKER=1 skips
# the Docker set-up (the container tests then skip, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - started))" >&2; }

step "installing nimctl[cpu,test] into .venv"
bash scripts/setup.sh cpu,test
step "ruff"
.venv/bin/ruff check .
if [[ "${NIMCTL_SKIP_DOCKER:-0}" != 1 ]]; then
    step "Docker engine and Compose"
    bash scripts/ensure-docker.sh
    step "images (base from Debian packages, CPU image from a wheelhouse)"
    bash scripts/build-images.sh
fi
step "pytest"
.venv/bin/python -m pytest "$@"
