"""Classification reasons that state exactly what was compared: memory figures, compute capability, MIG."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from nimctl.gpu import Inventory, parse_gpu_spec
from nimctl.gpu.units import GIB
from nimctl.profiles import Manifest, classify, find_manifest, load_manifest

# Weights + overhead (21.4 GiB) fit an L4's 21.6 usable GiB, but a 2048-token KV cache (5 GiB with
# 80 layers of 64 KV heads) does not: the "too large" verdict must not blame weights + overhead.
HEAVY_KV = """\
schema_version: 1
model:
  name: heavy-kv
  source: hf://org/heavy-kv
  served_name: org/heavy-kv
  parameters: 10.4B
  num_layers: 80
  hidden_size: 8192
  num_attention_heads: 64
  num_kv_heads: 64
  head_dim: 128
  max_context: 32768
profiles:
  - id: "{id}"
    tags: {{llm_engine: vllm, precision: bf16, tp: "1", pp: "1", profile: throughput}}
"""


def _heavy(tmp_path: Path) -> Manifest:
    path = tmp_path / "heavy-kv.yaml"
    path.write_text(HEAVY_KV.format(id="d" * 64), encoding="utf-8")
    return load_manifest(path)


def test_too_large_states_the_figures_it_compared(tmp_path: Path) -> None:
    (item,) = classify(_heavy(tmp_path), parse_gpu_spec("L4"))
    assert item.status == "incompatible"
    assert item.memory.static < 0.9 * 24 * GIB  # weights + overhead alone would fit
    assert item.reason == (
        "too large: needs 26.4 GiB/GPU even at 2048 tokens "
        "(weights 19.4 + KV cache 5.0 + overhead 2.0), 21.6 GiB usable on NVIDIA L4"
    )


def test_too_large_on_weights_alone_says_the_same_sum() -> None:
    items = classify(find_manifest("gemma-3-27b-it"), parse_gpu_spec("L4"))
    item = next(c for c in items if c.profile.name == "vllm-bf16-tp1-pp1")
    # Gemma 3's overhead holds its sliding-window layers' KV (see memory.py): 2.4, not 2.0.
    assert item.reason == (
        "too large: needs 53.6 GiB/GPU even at 2048 tokens "
        "(weights 51.0 + KV cache 0.2 + overhead 2.4), 21.6 GiB usable on NVIDIA L4"
    )


def test_some_gpus_lacking_the_compute_capability_are_counted_as_such() -> None:
    items = classify(find_manifest("qwen2.5-vl-7b-instruct"), parse_gpu_spec("L4,A100-80GB"))
    item = next(c for c in items if c.profile.name == "vllm-fp8-tp2-pp1")
    assert item.status == "incompatible"
    assert item.reason == "needs 2 GPUs with compute capability >= 8.9 (fp8); 1 of 2 has it"
    assert item.fix == "1 more GPU with compute capability >= 8.9"


def test_no_gpu_with_the_compute_capability_names_the_best_there_is() -> None:
    items = classify(find_manifest("qwen2.5-vl-7b-instruct"), parse_gpu_spec("T4,V100"))
    item = next(c for c in items if c.profile.name == "vllm-bf16-tp1-pp1")
    assert item.reason == "bf16 needs compute capability 8.0, Tesla T4 has 7.5"


@pytest.mark.parametrize("gpus", ["A100-80GB", "none"])  # a selection that succeeds, one that fails
def test_the_report_classifies_once(monkeypatch: pytest.MonkeyPatch, gpus: str) -> None:
    from nimctl.profiles import report

    calls: list[str] = []
    real = report.classify

    def counting(*args: object, **kwargs: object) -> object:
        calls.append("classify")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(report, "classify", counting)
    result = report.profile_report(find_manifest("qwen2.5-vl-7b-instruct"), parse_gpu_spec(gpus))
    assert calls == ["classify"]
    assert (result.selection is None) == (gpus == "none")
    assert len(result.classification) == 7


def _with_mig(spec: str, *mig_indices: int) -> Inventory:
    inventory = parse_gpu_spec(spec)
    gpus = tuple(replace(gpu, mig_mode=gpu.index in mig_indices) for gpu in inventory.gpus)
    return replace(inventory, gpus=gpus)


def test_a_gpu_in_mig_mode_is_not_a_whole_free_card() -> None:
    manifest = find_manifest("qwen2.5-vl-7b-instruct")
    items = {c.profile.name: c for c in classify(manifest, _with_mig("H100", 0))}
    assert items["vllm-fp8-tp1-pp1-h100"].status == "incompatible"
    assert items["vllm-fp8-tp1-pp1-h100"].reason == "GPU 0 in MIG mode: profiles are sized for whole GPUs"
    assert (
        items["vllm-fp8-tp1-pp1-h100"].fix
        == "disable MIG mode (nvidia-smi -i 0 -mig 0) or use a GPU without it"
    )
    items = {c.profile.name: c for c in classify(manifest, _with_mig("H100:2", 1))}
    assert items["vllm-fp8-tp1-pp1-h100"].runnable and items["vllm-fp8-tp1-pp1-h100"].gpus == (0,)
    assert items["vllm-fp8-tp2-pp1"].reason == "needs 2 GPUs, 1 available (1 more in MIG mode, not counted)"


def test_nim_listing_marks_a_mig_gpu_and_prints_the_inventory_notes() -> None:
    from nimctl.gpu.nvml import read_nvml
    from nimctl.profiles.report import nim_text, profile_report
    from tests.gpu.fake_nvml import FakeNvml, a100_mig, h100

    inventory = read_nvml(FakeNvml(devices=[a100_mig(), h100()]), environ={})
    text = nim_text(profile_report(find_manifest("qwen2.5-vl-7b-instruct"), inventory))
    assert "  -  [20b2:10de] (0) NVIDIA A100-SXM4-80GB 0% (MIG mode)" in text
    assert "- Note: GPU 0 (NVIDIA A100-SXM4-80GB) is in MIG mode: " in text
    assert "(vllm-fp8-tp1-pp1-h100) (selected)" in text
