"""Memory needed per GPU by one profile: weights + KV cache for the context + a stated overhead.

    weights   = parameters x bytes per weight of the precision / (tp x pp)
                (fp32 4, bf16/fp16 2, fp8 1, int4/mxfp4/nvfp4 0.5; a vision tower that a
                quantised profile leaves in bf16 is ignored: it is a few percent of a VLM)
    KV cache  = 2 (K and V) x layers/pp x ceil(kv_heads/tp) x head_dim x bytes per KV element
                x context tokens, for one sequence of the full context (vLLM refuses to start
                when even one does not fit); KV elements are 1 byte with ``--kv-cache-dtype fp8``,
                else the precision's activation type (4 for fp32, otherwise 2). Sliding-window
                layers (Gemma 3) hold only their window, counted with the overhead.
    overhead  = 2 GiB per GPU: CUDA context, activation peak while vLLM profiles the model,
                CUDA graphs, NCCL buffers with tp > 1. On the CPU, 0.5 GiB plus the KV space
                ``VLLM_CPU_KVCACHE_SPACE`` reserves instead of a per-context figure.

A profile spanning several nodes (the ``nodes`` tag) is counted the same way, per GPU across
nodes: ``tp x pp`` is every GPU of every node (tensor parallel within a node, pipeline parallel
across them), so each GPU holds 1/(tp x pp) of the weights and the KV cache of layers/pp layers.
On the CPU, each node's rank holds 1/(tp x pp) of the weights.

The context is the profile's ``--max-model-len`` if it sets one, else the model's ``max_context``,
unless the caller overrides it. The budget on a GPU is vLLM's ``--gpu-memory-utilization``
(default 0.9) x its memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nimctl.engine_flags import requested_context_length
from nimctl.gpu.units import GIB, gib_number
from nimctl.profiles.schema import ModelInfo, Profile

WEIGHT_BYTES: dict[str, float] = {
    "fp32": 4,
    "bf16": 2,
    "fp16": 2,
    "fp8": 1,
    "int4": 0.5,
    "mxfp4": 0.5,
    "nvfp4": 0.5,
}
GPU_OVERHEAD = 2 * GIB
CPU_OVERHEAD = GIB // 2
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU (or, for a CPU profile, of host memory)."""

    weights: int
    kv_per_token: int
    context: int
    overhead: int
    kv_fixed: int = 0  # the CPU backend reserves a fixed KV space instead of a per-token figure

    @property
    def kv_cache(self) -> int:
        return self.kv_fixed or self.kv_per_token * self.context

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    @property
    def static(self) -> int:
        """What is needed before any KV cache: weights + overhead."""
        return self.weights + self.overhead

    def total_for(self, context: int) -> int:
        return self.static + (self.kv_fixed or self.kv_per_token * context)

    def max_context_within(self, budget: int) -> int:
        """The longest context whose estimate fits ``budget`` bytes (0 when nothing fits)."""
        if self.kv_fixed or self.kv_per_token == 0:
            return self.context if self.total <= budget else 0
        return max(0, (budget - self.static) // self.kv_per_token)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights_gib": gib_number(self.weights),
            "kv_cache_gib": gib_number(self.kv_cache),
            "overhead_gib": gib_number(self.overhead),
            "total_gib": gib_number(self.total),
            "context_tokens": self.context,
            "kv_bytes_per_token": self.kv_per_token,
        }


def estimate(model: ModelInfo, profile: Profile, context: int | None = None) -> MemoryEstimate:
    """The memory estimate of ``profile`` (per GPU, across all its nodes; of host memory for a CPU
    profile, per node)."""
    tp, pp = profile.tp, profile.pp
    weights = int(model.parameters * WEIGHT_BYTES[profile.precision] / (tp * pp))
    if context is None:
        context = requested_context_length(profile.engine_args, None) or model.max_context
    if profile.device == "cpu":
        kv_space = _float(profile.env.get("VLLM_CPU_KVCACHE_SPACE")) or 4.0  # vLLM's CPU default, GiB
        return MemoryEstimate(
            weights=weights,
            kv_per_token=0,
            context=context,
            overhead=CPU_OVERHEAD,
            kv_fixed=int(kv_space * GIB),
        )
    kv_dtype = profile.engine_arg("--kv-cache-dtype") or "auto"
    kv_bytes = 1 if kv_dtype.startswith("fp8") else (4 if profile.precision == "fp32" else 2)
    layers_per_gpu = math.ceil(model.num_layers / pp)
    kv_heads_per_gpu = math.ceil(model.num_kv_heads / tp)  # vLLM replicates KV heads when tp > kv_heads
    per_layer_token = 2 * kv_heads_per_gpu * model.head_dim * kv_bytes
    if model.sliding_window is None or model.full_attention_layers is None:
        kv_per_token = layers_per_gpu * per_layer_token
        return MemoryEstimate(
            weights=weights, kv_per_token=kv_per_token, context=context, overhead=GPU_OVERHEAD
        )
    # Sliding-window layers hold a fixed window of KV whatever the context: count it as overhead.
    full_layers = math.ceil(model.full_attention_layers / pp)
    window_layers = layers_per_gpu - full_layers
    window = window_layers * per_layer_token * min(context, model.sliding_window)
    return MemoryEstimate(
        weights=weights,
        kv_per_token=full_layers * per_layer_token,
        context=context,
        overhead=GPU_OVERHEAD + window,
    )


def gpu_memory_utilization(profile: Profile) -> float:
    return _float(profile.engine_arg("--gpu-memory-utilization")) or DEFAULT_GPU_MEMORY_UTILIZATION


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
