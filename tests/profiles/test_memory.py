"""Memory estimates against figures worked out by hand from the published configs."""

from __future__ import annotations

import pytest

from nimctl.profiles import estimate, find_manifest

GIB = 1024**3
QWEN7B_PARAMS = 8_290_000_000


def _profile(model: str, name: str):
    manifest = find_manifest(model)
    profile = manifest.profile_by_id_or_name(name)
    assert profile is not None
    return manifest, profile


@pytest.mark.parametrize(
    ("name", "weights", "kv_per_token"),
    [
        # bf16: 2 bytes a weight; KV = 2 (K,V) x 28 layers x 4 KV heads x 128 x 2 bytes
        ("vllm-bf16-tp1-pp1", QWEN7B_PARAMS * 2, 2 * 28 * 4 * 128 * 2),
        # tp2 halves the weights and the KV heads on each GPU
        ("vllm-bf16-tp2-pp1", QWEN7B_PARAMS * 2 // 2, 2 * 28 * 2 * 128 * 2),
        # fp8 weights; the KV cache stays bf16 without --kv-cache-dtype
        ("vllm-fp8-tp1-pp1", QWEN7B_PARAMS, 2 * 28 * 4 * 128 * 2),
        # the H100 profile also stores the KV cache in fp8
        ("vllm-fp8-tp1-pp1-h100", QWEN7B_PARAMS, 2 * 28 * 4 * 128 * 1),
    ],
)
def test_qwen_7b(name: str, weights: int, kv_per_token: int) -> None:
    manifest, profile = _profile("qwen2.5-vl-7b-instruct", name)
    memory = estimate(manifest.model, profile)
    assert memory.weights == weights
    assert memory.kv_per_token == kv_per_token
    assert memory.context == 128000
    assert memory.overhead == 2 * GIB
    assert memory.total == weights + kv_per_token * 128000 + 2 * GIB


def test_kv_heads_are_replicated_when_tp_exceeds_them() -> None:
    manifest, profile = _profile("qwen2.5-vl-72b-instruct", "vllm-bf16-tp8-pp1")
    memory = estimate(manifest.model, profile)
    assert memory.kv_per_token == 2 * 80 * 1 * 128 * 2  # 8 KV heads over 8 GPUs: one each


def test_sliding_window_layers_hold_only_their_window() -> None:
    manifest, profile = _profile("gemma-3-27b-it", "vllm-bf16-tp1-pp1")
    memory = estimate(manifest.model, profile)
    assert memory.kv_per_token == 10 * 2 * 16 * 128 * 2  # the 10 global layers grow with the context
    assert memory.overhead == 2 * GIB + 52 * 2 * 16 * 128 * 2 * 1024  # 52 local layers x 1024 tokens


def test_profile_max_model_len_and_caller_override() -> None:
    manifest, profile = _profile("phi-3.5-vision-instruct", "vllm-bf16-tp1-pp1")
    assert estimate(manifest.model, profile).context == 32768  # the profile's --max-model-len
    assert estimate(manifest.model, profile, context=4096).context == 4096


def test_cpu_profile_uses_the_kv_space_it_reserves() -> None:
    manifest = find_manifest("tiny-llm")
    memory = estimate(manifest.model, manifest.profiles[0])
    assert memory.kv_cache == 1 * GIB  # VLLM_CPU_KVCACHE_SPACE=1
    assert memory.weights == 114_624 * 4  # fp32


def test_max_context_within_a_budget() -> None:
    manifest, profile = _profile("qwen2.5-vl-7b-instruct", "vllm-bf16-tp1-pp1")
    memory = estimate(manifest.model, profile)
    budget = memory.static + 57344 * 1000
    assert memory.max_context_within(budget) == 1000
    assert memory.max_context_within(memory.static - 1) == 0
