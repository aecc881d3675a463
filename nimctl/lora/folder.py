"""What a LoRA adapter folder holds, and whether this server can serve it.

An adapter is a folder in Hugging Face PEFT format: ``adapter_config.json`` (``peft_type`` LORA,
its rank ``r``, ``target_modules``, ``base_model_name_or_path``) and ``adapter_model.safetensors``.
Its name is the folder's name, as in NIM. A folder that fails a check is skipped with the reason,
never fatal: the server goes on with the others (:func:`scan_folder`).

Only the safetensors header is read (8 bytes of length, then JSON): enough to tell a weights file
from junk without loading a tensor; the engine reads the weights when it loads the adapter.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Written by `nimctl lora add` into a folder it copied: `nimctl lora rm` deletes only those.
ADDED_MARKER = ".nimctl-lora-add"
# The ranks vLLM 0.32 accepts for --max-lora-rank (vllm/config/lora.py, MaxLoRARanks).
ENGINE_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# A config larger than this is not an adapter config (they are a few KB).
_MAX_CONFIG_BYTES = 1 << 20
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header


class AdapterError(Exception):
    """An adapter folder the server cannot serve; the message is the reason, for logs and metadata."""


@dataclass(frozen=True)
class Adapter:
    name: str
    path: Path
    rank: int
    alpha: float | None
    target_modules: tuple[str, ...]
    base_model: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "base": self.base_model,
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": list(self.target_modules),
        }


@dataclass(frozen=True)
class SkippedAdapter:
    name: str
    path: Path
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "reason": self.reason}


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise AdapterError(f"{ADAPTER_CONFIG} is over {_MAX_CONFIG_BYTES >> 20} MB")
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"no {ADAPTER_CONFIG}: not a PEFT adapter folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AdapterError(f"cannot read {ADAPTER_CONFIG}: {getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:
        raise AdapterError(f"{ADAPTER_CONFIG} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{ADAPTER_CONFIG} is not a JSON object")
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise AdapterError(f"{ADAPTER_CONFIG} says peft_type {peft_type!r}; only LORA adapters are served")
    return config


def _rank(config: dict[str, Any]) -> int:
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise AdapterError(f"{ADAPTER_CONFIG} has no positive integer rank 'r' (got {rank!r})")
    # rank_pattern gives some modules a rank of their own: the engine must fit the largest.
    pattern = config.get("rank_pattern") or {}
    others = (
        [r for r in pattern.values() if isinstance(r, int) and not isinstance(r, bool)]
        if isinstance(pattern, dict)
        else []
    )
    return max([rank, *others])


def _target_modules(config: dict[str, Any]) -> tuple[str, ...]:
    targets = config.get("target_modules")
    if isinstance(targets, str):  # PEFT allows a regular expression, or "all-linear"
        return (targets,)
    if isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
        return tuple(sorted(targets))
    raise AdapterError(f"{ADAPTER_CONFIG} names no target_modules")


def _check_weights(folder: Path) -> None:
    path = folder / ADAPTER_WEIGHTS
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise AdapterError(f"{ADAPTER_WEIGHTS} is empty or cut short")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER_BYTES or length > path.stat().st_size - 8:
                raise AdapterError(f"{ADAPTER_WEIGHTS} is not a safetensors file (bad header length)")
            header = json.loads(handle.read(length))
    except FileNotFoundError:
        raise AdapterError(f"no {ADAPTER_WEIGHTS}: the adapter's weights are missing") from None
    except OSError as exc:
        raise AdapterError(f"cannot read {ADAPTER_WEIGHTS}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise AdapterError(f"{ADAPTER_WEIGHTS} is not a safetensors file (bad header)") from None
    names = [key for key in header if key != "__metadata__"] if isinstance(header, dict) else []
    if not any("lora_A" in key for key in names) or not any("lora_B" in key for key in names):
        raise AdapterError(f"{ADAPTER_WEIGHTS} holds no LoRA weights (no lora_A/lora_B tensors)")


def read_adapter(folder: Path) -> Adapter:
    """The adapter in ``folder``; AdapterError says why it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"{folder} is not a folder")
    config = _read_config(folder)
    rank = _rank(config)
    targets = _target_modules(config)
    _check_weights(folder)
    alpha = config.get("lora_alpha")
    base = config.get("base_model_name_or_path")
    return Adapter(
        name=folder.name,
        path=folder,
        rank=rank,
        alpha=float(alpha) if isinstance(alpha, int | float) and not isinstance(alpha, bool) else None,
        target_modules=targets,
        base_model=base if isinstance(base, str) and base.strip() else None,
    )


def same_model(a: str, b: str) -> bool:
    """Whether two names mean the same model: the last part of a path, URI or repository id, any case
    (``builtin://tiny-llm``, ``tiny-llm`` and ``/cache/Tiny-LLM/`` are one model)."""

    def last(name: str) -> str:
        return name.rstrip("/").rpartition("://")[2].rstrip("/").rpartition("/")[2].lower()

    return bool(last(a)) and last(a) == last(b)


def check_adapter(adapter: Adapter, *, max_rank: int | None, base_names: Collection[str]) -> None:
    """Whether this server can serve ``adapter``: its rank fits, and it was made for this model."""
    if max_rank is not None and adapter.rank > max_rank:
        raise AdapterError(
            f"rank {adapter.rank} is above the server's largest, {max_rank} (NIM_MAX_LORA_RANK)"
        )
    if adapter.base_model and base_names and not any(same_model(adapter.base_model, b) for b in base_names):
        raise AdapterError(
            f"made for base model {adapter.base_model!r}, and this server serves {sorted(base_names)[0]!r}"
        )


def inspect(folder: Path, *, max_rank: int | None, base_names: Collection[str]) -> Adapter | SkippedAdapter:
    """``folder`` as an adapter this server serves, or skipped with the reason."""
    try:
        adapter = read_adapter(folder)
        check_adapter(adapter, max_rank=max_rank, base_names=base_names)
    except AdapterError as exc:
        return SkippedAdapter(Path(folder).name, Path(folder), str(exc))
    return adapter


def adapter_folders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that name adapters: hidden ones (a copy in progress) left out."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(
    folder: Path, *, max_rank: int | None, base_names: Collection[str]
) -> list[Adapter | SkippedAdapter]:
    """Every adapter folder in ``folder``, by name: served or skipped with the reason."""
    return [inspect(sub, max_rank=max_rank, base_names=base_names) for sub in adapter_folders(folder)]


def fitted_rank(ranks: Collection[int]) -> int:
    """The smallest rank vLLM accepts for --max-lora-rank that fits every rank given (8 for none)."""
    largest = max(ranks, default=1)
    return next((r for r in ENGINE_RANKS if r >= max(largest, 8)), ENGINE_RANKS[-1])
