"""What the machine has: the GPU list that profile selection classifies against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nimctl.gpu.units import GIB, cc_text, normalise_name

__all__ = ["GIB", "GPU", "Inventory"]


@dataclass(frozen=True)
class GPU:
    """One GPU, read through NVML or described by ``--gpus`` (then ``assumed`` is true)."""

    index: int
    name: str
    memory_total: int  # bytes
    memory_free: int  # bytes
    compute_capability: tuple[int, int] | None
    pci_id: str | None = None  # "device:vendor", lower-case hex, e.g. "2330:10de"
    uuid: str | None = None
    memory_used: int | None = None  # bytes
    utilization_pct: int | None = None
    mig_mode: bool | None = None
    catalog_key: str | None = None  # the catalogue entry it was recognised as
    family: str | None = None  # e.g. "H100": what a profile's `gpu` tag names
    aliases: tuple[str, ...] = ()
    assumed: bool = False

    @property
    def memory_total_gib(self) -> float:
        return self.memory_total / GIB

    def matches_gpu_tag(self, tag: str) -> bool:
        """Whether a profile's ``gpu`` tag (e.g. ``H100``, ``H100_NVL``, ``A10G``) names this card."""
        wanted = normalise_name(tag)
        names = {self.family or "", self.catalog_key or "", *self.aliases}
        return wanted in {normalise_name(n) for n in names if n}

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "pci_id": self.pci_id,
            "memory_total_mib": self.memory_total // 2**20,
            "memory_used_mib": None if self.memory_used is None else self.memory_used // 2**20,
            "memory_free_mib": self.memory_free // 2**20,
            "utilization_pct": self.utilization_pct,
            "compute_capability": cc_text(self.compute_capability),
            "mig_mode": self.mig_mode,
            "catalog_key": self.catalog_key,
            "family": self.family,
            "assumed": self.assumed,
        }


@dataclass(frozen=True)
class Inventory:
    """The GPUs visible to nimctl; ``device`` is "cpu" and ``reason`` says why when there are none."""

    gpus: tuple[GPU, ...] = ()
    reason: str | None = None
    source: Literal["nvml", "assumed"] = "nvml"
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    notes: tuple[str, ...] = field(default=())
    # GPUs the machine has that NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES keep from nimctl.
    hidden: int = 0

    @property
    def device(self) -> Literal["cuda", "cpu"]:
        return "cuda" if self.gpus else "cpu"

    def describe(self) -> str:
        """One line: ``2 x NVIDIA L40S (48 GiB)`` or ``no GPU (reason); using the CPU``."""
        if not self.gpus:
            return f"no GPU ({self.reason or 'none visible'}); using the CPU"
        groups: dict[str, int] = {}
        for gpu in self.gpus:
            label = f"{gpu.name} ({gpu.memory_total_gib:.0f} GiB)"
            groups[label] = groups.get(label, 0) + 1
        text = ", ".join(f"{count} x {label}" for label, count in groups.items())
        return text + (" [assumed]" if self.source == "assumed" else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "source": self.source,
            "reason": self.reason,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "notes": list(self.notes),
        }
