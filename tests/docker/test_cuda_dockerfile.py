"""container/Dockerfile.cuda, built on a stand-in base.

Its real base (vllm/vllm-openai) needs a registry and its engine a GPU; neither exists here.
The CPU deps image stands in for the base: a Python with pip and vLLM installed, as in the
official image. What is checked is everything this Dockerfile adds on top: tini, the uid 1000
user, nimctl's server installed without touching what the base pinned (and without the wheels
in any layer), the manifests, the entry point, the health check; `nim-serve --dry-run` then chooses a GPU profile for an
assumed H100.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.docker.conftest import WHEELHOUSE

if TYPE_CHECKING:
    from docker import DockerClient

    from nimctl.runtime.images import BuildResult

pytestmark = pytest.mark.docker

# A tag of its own; its deps image is named by a digest of its inputs (the stand-in base among
# them), so it cannot be a real CUDA deps image, and the build discards no other deps image.
TAG = "nimctl/nim-cuda:e2e-stand-in"


def test_cuda_image_on_a_stand_in_base(docker_client: DockerClient, cpu_build: BuildResult) -> None:
    from nimctl.runtime.images import build_image

    result = build_image(
        docker_client, device="cuda", image=TAG, base_image=cpu_build.deps_image, wheelhouse=WHEELHOUSE
    )
    try:
        config = docker_client.images.get(TAG).attrs["Config"]
        assert config["User"] == "1000:1000"
        assert config["Entrypoint"] == ["/usr/bin/tini", "-g", "--", "nim-serve"]
        assert "8000/tcp" in config["ExposedPorts"]
        assert "/v1/health/live" in " ".join(config["Healthcheck"]["Test"])
        # The wheels were copied into a throwaway stage only: no layer of the image holds them.
        history = [str(layer.get("CreatedBy") or "") for layer in docker_client.images.get(TAG).history()]
        assert not [line for line in history if "/tmp/wheels" in line], history
        output = docker_client.containers.run(
            TAG,
            command=["--dry-run"],
            environment={
                "NIMCTL_ASSUME_GPUS": "H100-80GB:1",
                "NIM_MODEL_PATH": "hf://Qwen/Qwen2.5-VL-7B-Instruct",
            },
            remove=True,
        )
        plan = json.loads(output)
        assert plan["manifest"] == "/opt/nim/profiles/qwen2.5-vl-7b-instruct.yaml"
        assert plan["profile_name"] == "vllm-fp8-tp1-pp1-h100"
        assert plan["config"]["cache_path"] == "/opt/nim/.cache"
    finally:
        docker_client.images.remove(TAG, force=True)
        if not result.deps_reused:  # only what this test built: never someone's real CUDA deps image
            docker_client.images.remove(result.deps_image, force=True)
