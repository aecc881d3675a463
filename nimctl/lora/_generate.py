"""Build the demo LoRA adapters with peft and write them into a folder.

Only this module imports torch, transformers and peft, and only ``nimctl.lora.demo``'s
generation path imports it, so that the CLI and the server front stay light.
Every adapter is seeded on its own, so the files come out byte-identical each run (for one
torch and peft version; peft writes its version number into adapter_config.json).

The base model is a Llama with the built-in tiny-llm's layer sizes, built from its
configuration figures rather than loaded from the cache: LoRA on the decoder's linear layers
depends only on their shapes, so the adapters fit ``nimctl.models.builtin``'s tiny-llm without
generating it first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from nimctl.lora.folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS

if TYPE_CHECKING:  # the specs are demo.py's; it imports this module only to generate
    from nimctl.lora.demo import DemoAdapter
from nimctl.models._generate import CONTEXT_LENGTH, TEXT_HEADS, TEXT_HIDDEN, TEXT_INTERMEDIATE, TEXT_LAYERS

# Not used by any adapter weight (LoRA here never touches the embeddings); small to build fast.
_VOCAB_SIZE = 256


def _base_model(model: str) -> Any:
    config = LlamaConfig(
        vocab_size=_VOCAB_SIZE,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        num_key_value_heads=TEXT_HEADS,
        max_position_embeddings=CONTEXT_LENGTH,
        tie_word_embeddings=True,
        dtype="float32",
    )
    base = LlamaForCausalLM(config).to(torch.float32)
    # peft copies the base model's name into adapter_config.json (base_model_name_or_path).
    base.name_or_path = f"builtin://{model}"
    return base


def _sort_target_modules(config_file: Path) -> None:
    """peft keeps target_modules as a set and writes it in hash order, which changes from one
    process to the next (string hashing is randomised): written sorted, the file is the same
    every run. The rest is peft's own format (indent 2, sorted keys, no final newline)."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def build_adapter(model: str, spec: DemoAdapter, folder: Path) -> None:
    """Write adapter ``spec`` for base ``model`` into the new folder ``folder``."""
    base = _base_model(model)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=f"builtin://{model}",
        # Random A and B (nn.Linear's own init) rather than B = 0, so that the adapter changes
        # the model's outputs: the tests tell an adapter's answers from the base model's.
        init_lora_weights=False,
    )
    # Seeded right before the LoRA layers are made, so that each adapter's weights depend only
    # on its own seed and shape, not on the base model or the other adapters; in a forked RNG,
    # so that a caller's own random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        peft_model = get_peft_model(base, config)
    # save_embedding_layers=False: "auto" would ask the Hugging Face Hub whether
    # "builtin://tiny-llm" has a config.json (a network call, and a warning).
    peft_model.save_pretrained(folder, safe_serialization=True, save_embedding_layers=False)
    _sort_target_modules(folder / ADAPTER_CONFIG)
    # peft's model card is an empty template ("More information needed"): dropped.
    (folder / "README.md").unlink(missing_ok=True)
    if spec.broken:
        (folder / ADAPTER_WEIGHTS).unlink()


def generate(model: str, specs: Sequence[DemoAdapter], folder: Path) -> None:
    """Write the demo adapters ``specs`` of base ``model`` into the existing, empty ``folder``."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for spec in specs:
        target = folder / spec.name
        target.mkdir()
        build_adapter(model, spec, target)
