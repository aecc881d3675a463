"""The profile listing as data: NIM's grouping, the chosen profile, and NIM's text form.

The CLI (``nimctl profiles list``) renders :func:`profile_report` as tables or JSON;
``list-model-profiles`` prints :func:`nim_text`, the same grouping in NIM's own layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nimctl.errors import ProfileError
from nimctl.gpu.inventory import Inventory
from nimctl.gpu.units import gib
from nimctl.profiles.classify import INCOMPATIBLE, LOW_MEMORY, Classified, classify
from nimctl.profiles.schema import Manifest
from nimctl.profiles.selection import Prefer, Selection, choose, rank, system_text

# Group keys in display order, with NIM's headings.
GROUPS: dict[str, str] = {
    "runnable": "Compatible with system and runnable",
    "lora": "With LoRA support",
    "low_memory": "Compatible with system but low memory",
    "incompatible": "Incompatible with system",
}


@dataclass(frozen=True)
class ProfileReport:
    manifest: Manifest
    inventory: Inventory
    classification: list[Classified]  # ranked: the order the automatic rule would try them
    selection: Selection | None
    error: ProfileError | None
    nodes: int = 1  # identical nodes of ``inventory``'s GPUs the group has

    @property
    def system(self) -> str:
        return system_text(self.inventory, self.nodes)

    def group_of(self, item: Classified) -> str:
        if item.status == LOW_MEMORY:
            return "low_memory"
        if item.status == INCOMPATIBLE:
            return "incompatible"
        return "lora" if item.profile.lora else "runnable"

    def groups(self) -> dict[str, list[Classified]]:
        grouped: dict[str, list[Classified]] = {key: [] for key in GROUPS}
        for item in self.classification:
            grouped[self.group_of(item)].append(item)
        return grouped

    def is_selected(self, item: Classified) -> bool:
        return self.selection is not None and self.selection.profile.id == item.profile.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": {
                "name": self.manifest.model.name,
                "source": self.manifest.model.source,
                "served_name": self.manifest.model.served_name,
                "manifest": str(self.manifest.path),
            },
            "system": self.inventory.to_dict(),
            "nodes": self.nodes,
            "selected": self.selection.to_dict() if self.selection else None,
            "error": None if self.error is None else {"message": self.error.message, "hint": self.error.hint},
            "profiles": [
                {**item.to_dict(), "group": self.group_of(item), "selected": self.is_selected(item)}
                for item in self.classification
            ],
        }


def profile_report(
    manifest: Manifest,
    inventory: Inventory,
    *,
    requested: str | None = None,
    prefer: Prefer = "throughput",
    lora: bool = False,
    max_model_len: int | None = None,
    nodes: int = 1,
) -> ProfileReport:
    """Classify every profile (once) for ``nodes`` nodes of ``inventory``'s GPUs and try the selection;
    a failed selection is kept, not raised."""
    classification = classify(manifest, inventory, max_model_len=max_model_len, nodes=nodes)
    ranked = rank(classification, inventory, prefer)
    selection: Selection | None = None
    error: ProfileError | None = None
    try:
        selection = choose(
            manifest, inventory, classification, requested, prefer, lora, ranked=ranked, nodes=nodes
        )
    except ProfileError as exc:
        error = exc
    return ProfileReport(manifest, inventory, ranked, selection, error, nodes)


def memory_text(item: Classified) -> str:
    """``13.1 GiB`` per GPU, or of host memory for a CPU profile."""
    return f"{gib(item.memory.total)} GiB"


def gpus_text(item: Classified) -> str:
    """``2 x H100``, ``4``, ``cpu``; per node for a multi-node profile: ``2 nodes x 8``."""
    profile = item.profile
    nodes = f"{profile.nodes} nodes x " if profile.nodes > 1 else ""
    if profile.device == "cpu":
        return f"{nodes}cpu"
    kind = profile.tags.get("gpu") or profile.tags.get("gpu_device")
    count = profile.gpus_per_node
    return nodes + (f"{count} x {kind}" if kind else str(count))


def nim_text(report: ProfileReport) -> str:
    """NIM's ``list-model-profiles`` layout: SYSTEM INFO, then MODEL PROFILES by group."""
    lines = ["SYSTEM INFO"]
    if report.inventory.gpus:
        lines.append("- Free GPUs:" if report.inventory.source == "nvml" else "- Assumed GPUs:")
        for gpu in report.inventory.gpus:
            util = "" if gpu.utilization_pct is None else f" {gpu.utilization_pct}%"
            mig = " (MIG mode)" if gpu.mig_mode else ""
            lines.append(f"  -  [{gpu.pci_id or '?'}] ({gpu.index}) {gpu.name}{util}{mig}")
    else:
        lines.append(f"- No GPU: {report.inventory.reason or 'none visible'}; device: cpu")
    if report.nodes > 1:
        lines.append(f"- Nodes: {report.nodes}, each with these GPUs")
    lines.extend(f"- Note: {note}" for note in report.inventory.notes)
    lines.append(f"MODEL PROFILES ({report.manifest.model.name})")
    grouped = report.groups()
    for key, heading in GROUPS.items():
        indent = "  " if key == "lora" else ""
        lines.append(f"{indent}- {heading}:")
        items = grouped[key]
        if not items:
            lines.append(f"{indent}  - <None>")
        for item in items:
            mark = " (selected)" if report.is_selected(item) else ""
            note = f" [{item.reason}]" if key in ("low_memory", "incompatible") else ""
            lines.append(f"{indent}  - {item.profile.id} ({item.profile.name}){mark}{note}")
    if report.selection is not None:
        lines.append(f"SELECTED: {report.selection.profile.id} ({report.selection.reason})")
    elif report.error is not None:
        lines.append(f"SELECTED: <None> ({report.error.message})")
    return "\n".join(lines)


def model_summaries(
    inventory: Inventory,
    *,
    prefer: Prefer = "throughput",
    lora: bool = False,
    profiles_dir: str | None = None,
    nodes: int = 1,
) -> list[dict[str, Any]]:
    """One line per manifest on the search path: what it would run here. A broken file is a row too."""
    from nimctl.errors import ManifestError
    from nimctl.profiles.loader import load_manifest, manifest_files

    rows: list[dict[str, Any]] = []
    for path in manifest_files(profiles_dir):
        try:
            manifest = load_manifest(path)
        except ManifestError as exc:
            rows.append({"model": path.stem, "manifest": str(path), "error": exc.message})
            continue
        report = profile_report(manifest, inventory, prefer=prefer, lora=lora, nodes=nodes)
        groups = report.groups()
        rows.append(
            {
                "model": manifest.model.name,
                "source": manifest.model.source,
                "manifest": str(path),
                "profiles": len(manifest.profiles),
                "runnable": len(groups["runnable"]) + len(groups["lora"]),
                "selected": report.selection.to_dict() if report.selection else None,
                "error": report.error.message if report.error else None,
            }
        )
    return rows
