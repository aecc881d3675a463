#!/usr/bin/env bash
# What nimctl reads of this machine's real GPUs, and what it would choose for every shipped
# manifest: the check to run on a machine with an NVIDIA GPU (the unit tests inject NVML).
#
# Usage: scripts/gpu-report.sh [OUTPUT_DIR]
# Environment: PYTHON, a Python that has nimctl's plain install (default: .venv/bin/python,
# else python3 with the checkout on PYTHONPATH). With OUTPUT_DIR, the JSON forms are kept there.
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-}"
if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
else
    python=python3
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nimctl() { "$python" -m nimctl "$@"; }
section() { printf '\n===== %s\n' "$*"; }

status=0
section "nvidia-smi"
nvidia-smi --query-gpu=index,name,pci.device_id,memory.total,memory.used,compute_cap,driver_version \
    --format=csv 2>&1 || echo "(nvidia-smi not available)"
section "nimctl gpus"
nimctl gpus || status=1
if [[ -n "$out_dir" ]]; then
    mkdir -p "$out_dir"
    nimctl gpus --format json >"$out_dir/gpus.json" || status=1
fi
for manifest in profiles/*.yaml; do
    model="$(basename "$manifest" .yaml)"
    section "nimctl profiles list $model"
    # Exit 8 (no runnable profile) is an answer here, not a failure of the check.
    nimctl profiles list "$manifest"
    rc=$?
    ((rc == 0 || rc == 8)) || status=1
    printf 'selected: '
    nimctl profiles select "$manifest" 2>&1
    if [[ -n "$out_dir" ]]; then
        nimctl profiles list "$manifest" --format json >"$out_dir/profiles-$model.json" 2>/dev/null
    fi
done
exit "$status"
