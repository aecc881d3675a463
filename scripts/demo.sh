#!/usr/bin/env bash
# README command 1: install nimctl, start the built-in tiny VLM with `nimctl run` (in a Docker
# container when a Docker daemon answers, else as a host process), ask it about a picture,
# print the reply, and stop it. Nothing is left running.
#   NIMCTL_DEMO_RUNTIME=docker|local   force a runtime (docker: installs/starts Docker as root)
#   NIMCTL_DEMO_PORT=8000              the port to publish on
set -euo pipefail
cd "$(dirname "$0")/.."
port="${NIMCTL_DEMO_PORT:-8000}"
name="nimctl-demo"

bash scripts/setup.sh cpu  # the engine; the test tools are scripts/test.sh's
runtime="${NIMCTL_DEMO_RUNTIME:-}"
if [[ -z "$runtime" ]]; then
    if docker info >/dev/null 2>&1; then runtime=docker; else runtime=local; fi
fi
if [[ "$runtime" == docker ]]; then
    bash scripts/ensure-docker.sh
    bash scripts/build-images.sh  # offline image build; seconds when nothing changed
fi
echo "demo: runtime $runtime, port $port" >&2

nimctl=.venv/bin/nimctl
trap '"$nimctl" stop "$name" >/dev/null 2>&1 || true' EXIT
"$nimctl" run tiny-vlm --detach --runtime "$runtime" --name "$name" --port "$port"
"$nimctl" chat --url "http://127.0.0.1:$port" --image examples/sun.png --max-tokens 32 --seed 1 \
    "What is in this picture?"
"$nimctl" stop "$name"
trap - EXIT
echo "demo: done (the tiny model's weights are random: its answer is gibberish; the pipeline is real)" >&2
