"""LoRA at launch: the adapters folder checked, the engine's LoRA sizes, and its LoRA arguments.

The engine is started with LoRA on and no ``--lora-modules``: the front loads every adapter it
finds through the engine's runtime route once the engine answers (:mod:`nimctl.server.adapters`),
so one adapter that fails to load is skipped with the engine's reason instead of failing the start,
and the static and dynamic modes share one path. The engine listens on loopback only, behind the
front, so its runtime routes are never reachable from outside; the front answers its own copies of
them only when ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` is set (:mod:`nimctl.server.lora_routes`).

Sizes, each the first that is set: the ``NIM_*`` variable, the profile's engine argument, then a
fit to the adapters found (``NIM_PASSTHROUGH_ARGS`` and arguments after ``nim-serve`` still win, and
the rank check uses the value the engine ends up with).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nimctl import contract
from nimctl.engine_flags import flag_value
from nimctl.errors import ConfigError
from nimctl.lora.folder import Adapter, fitted_rank, scan_folder
from nimctl.server.config import ServerConfig

# NIM's defaults for a server that may be given adapters later (dynamic mode, runtime updates).
DYNAMIC_MIN_RANK = 32
DEFAULT_MAX_LORAS = 8
DEFAULT_MAX_CPU_LORAS = 16
# The engine's switch for its runtime load/unload routes: always on, as only the front reaches it.
ENGINE_ENV = {contract.ALLOW_LORA_UPDATES: "True"}


@dataclass(frozen=True)
class LoraSettings:
    folder: Path
    refresh_interval: float | None  # None: the folder is scanned once, at start (static mode)
    runtime_updates: bool  # the front answers /v1/load_lora_adapter and /v1/unload_lora_adapter
    base_names: tuple[str, ...]  # the names an adapter's base_model_name_or_path may give
    max_rank: int
    max_loras: int
    max_cpu_loras: int

    def to_dict(self) -> dict[str, object]:
        return {
            "source": str(self.folder),
            "refreshInterval": self.refresh_interval,
            "runtimeUpdates": self.runtime_updates,
            "maxLoraRank": self.max_rank,
            "maxLoras": self.max_loras,
        }


def lora_folder(config: ServerConfig) -> Path | None:
    """``NIM_PEFT_SOURCE`` as a folder that exists; None when it is unset."""
    if not config.peft_source:
        return None
    folder = Path(config.peft_source)
    what = None
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
    elif not os.access(folder, os.R_OK | os.X_OK):
        what = "cannot be read by this user"
    if what is not None:
        raise ConfigError(
            f"{contract.PEFT_SOURCE}={config.peft_source} {what}",
            hint="point it at a folder holding one sub-folder per LoRA adapter (PEFT format), or unset it",
        )
    return folder


def lora_engine_args(config: ServerConfig, folder: Path, profile_args: Sequence[str]) -> list[str]:
    """The engine's LoRA arguments: LoRA on, and the rank, batch and memory sizes."""
    # Adapters may come later (rescans, runtime loads): room for NIM's default rank and batch then.
    dynamic = config.peft_refresh_interval is not None or config.allow_lora_updates
    try:
        found = [a for a in scan_folder(folder, max_rank=None, base_names=()) if isinstance(a, Adapter)]
    except OSError as exc:
        raise ConfigError(
            f"cannot read {contract.PEFT_SOURCE}={folder}: {exc.strerror or exc}",
            hint="the server's user must be able to list the folder and read the adapters in it",
        ) from None

    def from_profile(flag: str) -> int | None:
        value = flag_value(profile_args, flag)
        return int(value) if value is not None and value.isdigit() else None

    rank = config.max_lora_rank or from_profile("--max-lora-rank")
    if rank is None:
        rank = fitted_rank([a.rank for a in found] + ([DYNAMIC_MIN_RANK] if dynamic else []))
    loras = config.max_gpu_loras or from_profile("--max-loras")
    if loras is None:
        loras = DEFAULT_MAX_LORAS if dynamic else min(max(len(found), 1), DEFAULT_MAX_LORAS)
    cpu_loras = config.max_cpu_loras or from_profile("--max-cpu-loras") or max(loras, DEFAULT_MAX_CPU_LORAS)
    if cpu_loras < loras:
        raise ConfigError(
            f"{contract.MAX_CPU_LORAS}={cpu_loras} is below {contract.MAX_GPU_LORAS}={loras}",
            hint="the adapters kept in memory must include every one a batch may use",
        )
    args = ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(loras)]
    return [*args, "--max-cpu-loras", str(cpu_loras)]


def lora_settings(
    config: ServerConfig, folder: Path, engine_args: Sequence[str], base_names: Sequence[str]
) -> LoraSettings:
    """The settings the front serves adapters with, read from the engine's final arguments."""

    def final(flag: str) -> int:
        value = flag_value(engine_args, flag)
        if value is None or not value.isdigit():
            raise ConfigError(f"{flag} {value!r} is not a whole number", hint="fix the engine arguments")
        return int(value)

    return LoraSettings(
        folder=folder,
        refresh_interval=config.peft_refresh_interval,
        runtime_updates=config.allow_lora_updates,
        base_names=tuple(dict.fromkeys(n for n in base_names if n)),
        max_rank=final("--max-lora-rank"),
        max_loras=final("--max-loras"),
        max_cpu_loras=final("--max-cpu-loras"),
    )
