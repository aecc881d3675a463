"""nimctl.lora.folder: what counts as an adapter folder, and why one is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from nimctl.lora.folder import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    Adapter,
    AdapterError,
    SkippedAdapter,
    check_adapter,
    fitted_rank,
    read_adapter,
    same_model,
    scan_folder,
)

LORA_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
LORA_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


def make_adapter(folder: Path, *, rank: int = 8, weights: bool = True, **config: object) -> Path:
    folder.mkdir(parents=True)
    body = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": ["v_proj", "q_proj"],
        "base_model_name_or_path": "builtin://tiny-llm",
        **config,
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(body), encoding="utf-8")
    if weights:
        tensors = {LORA_A: np.zeros((rank, 64), np.float32), LORA_B: np.zeros((64, rank), np.float32)}
        save_file(tensors, str(folder / ADAPTER_WEIGHTS))
    return folder


def test_a_peft_folder_reads_as_an_adapter(tmp_path: Path) -> None:
    adapter = read_adapter(make_adapter(tmp_path / "poet", rank=16))
    assert adapter == Adapter("poet", tmp_path / "poet", 16, 32.0, ("q_proj", "v_proj"), "builtin://tiny-llm")
    assert adapter.to_dict()["target_modules"] == ["q_proj", "v_proj"]


def test_rank_pattern_counts_its_largest_rank(tmp_path: Path) -> None:
    folder = make_adapter(tmp_path / "mixed", rank=8, rank_pattern={"q_proj": 32})
    assert read_adapter(folder).rank == 32


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: (f / ADAPTER_WEIGHTS).unlink(), "weights are missing"),
        (lambda f: (f / ADAPTER_CONFIG).unlink(), "not a PEFT adapter folder"),
        (lambda f: (f / ADAPTER_CONFIG).write_text("{not json"), "not valid JSON"),
        (lambda f: (f / ADAPTER_CONFIG).write_text("[1]"), "not a JSON object"),
        (lambda f: (f / ADAPTER_CONFIG).write_text('{"peft_type": "IA3", "r": 8}'), "only LORA"),
        (lambda f: (f / ADAPTER_CONFIG).write_text('{"r": 0, "target_modules": ["q"]}'), "positive integer"),
        (lambda f: (f / ADAPTER_CONFIG).write_text('{"r": 8}'), "no target_modules"),
        (lambda f: (f / ADAPTER_WEIGHTS).write_bytes(b""), "empty or cut short"),
        (lambda f: (f / ADAPTER_WEIGHTS).write_bytes(b"\xff" * 64), "not a safetensors file"),
        (lambda f: save_file({"w": np.zeros(2, np.float32)}, str(f / ADAPTER_WEIGHTS)), "no LoRA weights"),
    ],
)
def test_a_broken_folder_says_why(tmp_path: Path, change, reason: str) -> None:
    folder = make_adapter(tmp_path / "broken")
    change(folder)
    with pytest.raises(AdapterError, match=reason):
        read_adapter(folder)


def test_rank_and_base_model_checks(tmp_path: Path) -> None:
    adapter = read_adapter(make_adapter(tmp_path / "big", rank=64))
    with pytest.raises(AdapterError, match="rank 64 is above the server's largest, 32"):
        check_adapter(adapter, max_rank=32, base_names=["tiny-llm"])
    check_adapter(adapter, max_rank=64, base_names=["tiny-llm", "builtin://tiny-llm"])
    other = read_adapter(make_adapter(tmp_path / "other", base_model_name_or_path="meta-llama/Llama-3.1-8B"))
    with pytest.raises(AdapterError, match="made for base model 'meta-llama/Llama-3.1-8B'"):
        check_adapter(other, max_rank=None, base_names=["tiny-llm"])
    # No base named in the config: nothing to compare, the engine judges the shapes.
    check_adapter(
        read_adapter(make_adapter(tmp_path / "anon", base_model_name_or_path="")),
        max_rank=8,
        base_names=["x"],
    )


def test_same_model_compares_the_last_name_part() -> None:
    assert same_model("builtin://tiny-llm", "tiny-llm")
    assert same_model("meta-llama/Llama-3.1-8B-Instruct", "hf://Meta-Llama/llama-3.1-8b-instruct")
    assert same_model("/cache/Tiny-LLM/", "tiny-llm")
    assert not same_model("tiny-vlm", "tiny-llm")
    assert not same_model("", "")


def test_scan_lists_every_folder_by_name_and_leaves_hidden_ones_out(tmp_path: Path) -> None:
    make_adapter(tmp_path / "b-good")
    make_adapter(tmp_path / "a-broken", weights=False)
    make_adapter(tmp_path / ".copying")
    (tmp_path / "a-file.txt").write_text("not a folder")
    found = scan_folder(tmp_path, max_rank=16, base_names=["tiny-llm"])
    assert [item.name for item in found] == ["a-broken", "b-good"]
    assert isinstance(found[0], SkippedAdapter) and "weights are missing" in found[0].reason
    assert isinstance(found[1], Adapter)


@pytest.mark.parametrize(
    ("ranks", "fitted"), [([], 8), ([4], 8), ([8, 16], 16), ([17], 32), ([300], 320), ([999], 512)]
)
def test_fitted_rank_is_one_vllm_accepts(ranks: list[int], fitted: int) -> None:
    assert fitted_rank(ranks) == fitted
