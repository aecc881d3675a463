"""Demo LoRA adapters for the built-in tiny models, generated with peft on first use.

``ensure_demo_adapters(model, dest_root)`` returns ``dest_root/<model>-loras``: a folder with
one sub-folder per adapter, in Hugging Face PEFT format, ready for ``NIM_PEFT_SOURCE`` or
``nimctl run --lora-dir``. For ``tiny-llm``:

- ``tiny-llm-lora-r8``: rank 8 on ``q_proj`` and ``v_proj``;
- ``tiny-llm-lora-r16``: rank 16 on all seven linear layers of each Llama decoder layer;
- ``tiny-llm-lora-broken``: a valid ``adapter_config.json`` but no weights, for the skip path.

The weights are random but seeded (and non-zero, so an adapter's answers differ from the base
model's); the files come out byte-identical on every run. Generation follows
``nimctl.models.builtin``'s way, with its helpers: a per-folder file lock, a temporary folder
renamed into place once complete, a marker of file sizes, files 0644 and folders 0755.

This module imports nothing heavy: torch, transformers and peft (the ``lora`` extra) are
imported only in ``nimctl.lora._generate``, on the generation path.
``python -m nimctl.lora.demo MODEL DEST_ROOT`` prints the folder.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from nimctl.errors import UsageError
from nimctl.models import builtin


@dataclass(frozen=True)
class DemoAdapter:
    """What ``_generate`` makes for one adapter."""

    name: str
    rank: int
    alpha: int
    target_modules: tuple[str, ...]
    seed: int
    # A deliberately broken adapter: a valid adapter_config.json and no weights.
    broken: bool = False


LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")

DEMO_SPECS: dict[str, tuple[DemoAdapter, ...]] = {
    "tiny-llm": (
        DemoAdapter("tiny-llm-lora-r8", rank=8, alpha=16, target_modules=("q_proj", "v_proj"), seed=808),
        DemoAdapter(
            "tiny-llm-lora-r16", rank=16, alpha=32, target_modules=LLAMA_ATTENTION + LLAMA_MLP, seed=1616
        ),
        DemoAdapter(
            "tiny-llm-lora-broken",
            rank=8,
            alpha=16,
            target_modules=("q_proj", "v_proj"),
            seed=404,
            broken=True,
        ),
    ),
}

# Base model -> the names of its demo adapters (the sub-folders of its demo folder).
DEMO_ADAPTERS: dict[str, tuple[str, ...]] = {
    model: tuple(spec.name for spec in specs) for model, specs in DEMO_SPECS.items()
}

# Bump when the generated adapters change, so that caches made by an older nimctl regenerate.
# The marker also carries builtin.GENERATOR_VERSION (its helpers write it): a new base model
# regenerates its adapters too.
GENERATOR_VERSION = 1

LORA_EXTRA_HINT = "install the LoRA extra: pip install 'nimctl[lora]'"


def demo_folder_name(model: str) -> str:
    return f"{model}-loras"


def _marker_name(model: str) -> str:
    # builtin's marker records one name and builtin's own generator version; this version rides
    # in the name, so that a bump here (or there) makes is_complete() false.
    return f"{demo_folder_name(model)}@{GENERATOR_VERSION}"


def _check_model(model: str) -> None:
    if model not in DEMO_SPECS:
        known = ", ".join(DEMO_SPECS)
        raise UsageError(
            f"no demo LoRA adapters for model {model!r}; the models with demo adapters are: {known}"
        )


def is_complete(model: str, folder: Path) -> bool:
    """True when ``folder`` holds all the demo adapters of ``model``, written by this generator."""
    return builtin.is_complete(_marker_name(model), folder)


def _build(model: str, folder: Path) -> None:
    """Write the adapters into ``folder`` (the only place that loads torch and peft)."""
    try:
        from nimctl.lora._generate import generate
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in {"peft", "torch", "transformers", "safetensors", "accelerate"}:
            raise
        raise UsageError(
            f"generating the demo LoRA adapters needs the Python package {missing!r}, which is not installed",
            hint=LORA_EXTRA_HINT,
        ) from exc
    generate(model, DEMO_SPECS[model], folder)


def ensure_demo_adapters(model: str, dest_root: Path) -> Path:
    """The demo adapters folder of base ``model`` under ``dest_root``, generated if needed."""
    _check_model(model)
    return builtin.generate_once(
        dest_root,
        demo_folder_name(model),
        lambda folder: _build(model, folder),
        marker_name=_marker_name(model),
        what=f"the demo LoRA adapters of {model!r}",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m nimctl.lora.demo MODEL DEST_ROOT``: print the demo adapters folder."""
    return builtin.module_main(argv, ensure_demo_adapters, "nimctl.lora.demo", DEMO_SPECS)


if __name__ == "__main__":
    sys.exit(main())
