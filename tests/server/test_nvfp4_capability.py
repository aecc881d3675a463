"""nvfp4 needs compute capability 10.0 (Blackwell): incompatible on an H100 (9.0), runnable on a B200."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimctl.gpu import parse_gpu_spec
from nimctl.profiles import Manifest, classify, load_manifest
from nimctl.profiles.tags import MIN_COMPUTE_CAPABILITY

# A small model (2 GiB of weights at bf16, 0.5 GiB at nvfp4): memory is never what decides here.
MANIFEST = """\
schema_version: 1
model:
  name: small-fp4
  source: hf://org/small-fp4
  served_name: org/small-fp4
  parameters: 1B
  num_layers: 16
  hidden_size: 2048
  num_attention_heads: 32
  num_kv_heads: 8
  head_dim: 64
  max_context: 8192
profiles:
  - id: "{nvfp4}"
    tags: {{llm_engine: vllm, precision: nvfp4, tp: "1", pp: "1", profile: throughput}}
  - id: "{bf16}"
    tags: {{llm_engine: vllm, precision: bf16, tp: "1", pp: "1", profile: throughput}}
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    path = tmp_path / "small-fp4.yaml"
    path.write_text(MANIFEST.format(nvfp4="a" * 64, bf16="b" * 64), encoding="utf-8")
    return load_manifest(path)


def test_nvfp4_threshold_is_blackwell() -> None:
    assert MIN_COMPUTE_CAPABILITY["nvfp4"] == (10, 0)


def test_nvfp4_is_incompatible_on_an_h100(manifest: Manifest) -> None:
    nvfp4, bf16 = classify(manifest, parse_gpu_spec("H100-80GB:1"))
    assert nvfp4.profile.precision == "nvfp4"
    assert nvfp4.status == "incompatible"
    assert not nvfp4.runnable
    assert nvfp4.reason == "nvfp4 needs compute capability 10.0, NVIDIA H100 80GB HBM3 has 9.0"
    assert nvfp4.fix == "a GPU with compute capability >= 10.0"
    assert bf16.runnable, bf16.reason  # the same card runs the model: only the precision is refused


def test_nvfp4_is_runnable_on_a_b200(manifest: Manifest) -> None:
    nvfp4, _ = classify(manifest, parse_gpu_spec("B200:1"))
    assert nvfp4.status == "runnable", nvfp4.reason
    assert nvfp4.runnable
    assert nvfp4.gpus == (0,)
    assert "compute capability" not in nvfp4.reason


def test_one_b200_among_h100s_is_enough_for_a_one_gpu_nvfp4_profile(manifest: Manifest) -> None:
    nvfp4, _ = classify(manifest, parse_gpu_spec("H100-80GB:2,B200:1"))
    assert nvfp4.runnable, nvfp4.reason
    assert nvfp4.gpus == (2,)  # the Blackwell card, not the larger-free-memory-first H100s
