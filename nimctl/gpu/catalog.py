"""The GPU catalogue (``nimctl/data/gpus.yaml``) and the ``--gpus SPEC`` language built on it.

SPEC is a comma-separated list of ``NAME[:COUNT][@FREE]``: ``H100-80GB:8``, ``L40S:2``, ``A10G``,
``A100-80GB:1@6GiB`` (one card with only 6 GiB free: a busy GPU), ``L4,L4``, or ``none`` (no GPU).
Names are catalogue keys or aliases, ignoring case, ``-`` and ``_``. FREE is in GiB (``6``,
``6GiB``: 2^30 bytes, as NVML counts) or GB (``6GB``: 10^9 bytes, as spec sheets do); any other
unit is refused rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from nimctl.errors import UsageError
from nimctl.gpu.inventory import GPU, Inventory
from nimctl.gpu.units import GB, GIB, normalise_name

CATALOG_PATH = Path(__file__).resolve().parent.parent / "data" / "gpus.yaml"
_MAX_GPUS = 64


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    family: str
    aliases: tuple[str, ...]
    pci_ids: tuple[str, ...]
    nvml_names: tuple[str, ...]
    memory_gib: float
    compute_capability: tuple[int, int]

    @property
    def display_name(self) -> str:
        return self.nvml_names[0] if self.nvml_names else f"NVIDIA {self.key}"


@lru_cache(maxsize=1)
def catalog() -> tuple[CatalogEntry, ...]:
    import yaml

    data = yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))
    entries = []
    for item in data["gpus"]:
        major, minor = (int(part) for part in str(item["compute_capability"]).split("."))
        entries.append(
            CatalogEntry(
                key=item["key"],
                family=item["family"],
                aliases=tuple(item.get("aliases") or ()),
                pci_ids=tuple(item.get("pci_ids") or ()),
                nvml_names=tuple(item.get("nvml_names") or ()),
                memory_gib=float(item["memory_gib"]),
                compute_capability=(major, minor),
            )
        )
    return tuple(entries)


def lookup(name: str) -> CatalogEntry | None:
    """The entry whose key or alias is ``name`` (ignoring case, '-' and '_')."""
    wanted = normalise_name(name)
    for entry in catalog():
        if wanted in {normalise_name(n) for n in (entry.key, *entry.aliases)}:
            return entry
    return None


def entries_for_tag(tag: str) -> tuple[CatalogEntry, ...]:
    """The entries a profile's ``gpu`` tag names: by family, key or alias, as a GPU matches it."""
    wanted = normalise_name(tag)
    return tuple(
        entry
        for entry in catalog()
        if wanted in {normalise_name(n) for n in (entry.family, entry.key, *entry.aliases)}
    )


def entry_for_pci(pci_id: str) -> CatalogEntry | None:
    """The entry that lists PCI id ``device:vendor``."""
    return next((entry for entry in catalog() if pci_id.lower() in entry.pci_ids), None)


def families() -> list[str]:
    """The ``gpu`` tag values, one per family, in catalogue order."""
    return list(dict.fromkeys(entry.family for entry in catalog()))


def recognise(pci_id: str | None, nvml_name: str | None) -> CatalogEntry | None:
    """The catalogue entry for a card NVML reported: by PCI device id, else by exact name."""
    entry = entry_for_pci(pci_id) if pci_id else None
    if entry is not None:
        return entry
    for entry in catalog():
        if nvml_name and nvml_name in entry.nvml_names:
            return entry
    return None


def parse_gpu_spec(spec: str) -> Inventory:
    """An assumed inventory from SPEC (see the module docstring); bad input is a one-line UsageError."""
    text = spec.strip()
    if text.lower() in {"none", "cpu", "0", ""}:
        return Inventory(gpus=(), reason=f"--gpus {text or 'none'}: no GPU assumed", source="assumed")
    gpus: list[GPU] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(
            r"([A-Za-z0-9_.-]+?)(?:\s*[:x]\s*([0-9]+))?(?:\s*@\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*))?", part
        )
        if not match:
            raise UsageError(
                f"bad GPU spec {part!r}: write NAME[:COUNT][@FREE], "
                "e.g. H100-80GB:8, L40S:2, A100-80GB:1@6GiB"
            )
        name, count_text, free_text, unit = match.groups()
        entry = lookup(name)
        if entry is None:
            raise UsageError(
                f"unknown GPU {name!r} in --gpus",
                hint=f"known GPUs: {', '.join(e.key for e in catalog())} (or 'none')",
            )
        count = int(count_text) if count_text else 1
        if count < 1:
            raise UsageError(f"bad GPU count in {part!r}: at least 1 (use 'none' for no GPU)")
        total = int(entry.memory_gib * GIB)
        free = total
        if free_text is not None:
            label = _free_unit(part, unit or "GiB")
            free = int(float(free_text) * (GIB if label == "GiB" else GB))
            if free > total:
                raise UsageError(
                    f"{part!r}: {free_text} {label} free is more than the {entry.memory_gib:g} GiB card"
                )
        for _ in range(count):
            gpus.append(_assumed_gpu(len(gpus), entry, total, free))
    if len(gpus) > _MAX_GPUS:
        raise UsageError(f"--gpus describes {len(gpus)} GPUs; at most {_MAX_GPUS} on one machine")
    return Inventory(gpus=tuple(gpus), source="assumed")


def _free_unit(part: str, unit: str) -> str:
    """``GiB`` or ``GB`` for the unit written after FREE; anything else is refused, not guessed."""
    for label in ("GiB", "GB"):
        if unit.lower() == label.lower():
            return label
    raise UsageError(
        f"unknown unit {unit!r} in {part!r}: write the free memory in GiB (2^30 bytes, the default) "
        "or GB (10^9 bytes)"
    )


def _assumed_gpu(index: int, entry: CatalogEntry, total: int, free: int) -> GPU:
    return GPU(
        index=index,
        name=entry.display_name,
        memory_total=total,
        memory_free=free,
        memory_used=total - free,
        compute_capability=entry.compute_capability,
        pci_id=entry.pci_ids[0] if entry.pci_ids else None,
        catalog_key=entry.key,
        family=entry.family,
        aliases=entry.aliases,
        assumed=True,
    )
