"""The tables of ``nimctl profiles list`` and ``show``, drawn on the CLI's :class:`~nimctl.output.Output`.

Kept beside :mod:`nimctl.profiles.report` (which builds what they show) so the command module
stays a thin layer of options; nothing here imports Typer.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from nimctl.gpu.units import gib
from nimctl.profiles.report import GROUPS, gpus_text, memory_text
from nimctl.profiles.selection import system_text

if TYPE_CHECKING:
    from nimctl.output import Output
    from nimctl.profiles.classify import Classified
    from nimctl.profiles.report import ProfileReport
    from nimctl.profiles.schema import Manifest


def print_report(out: Output, report: ProfileReport) -> None:
    """The grouped tables of ``nimctl profiles list MODEL``."""
    model = report.manifest.model
    out.text(f"Model:  {model.name} ({model.source}), manifest {report.manifest.path}")
    out.text(f"System: {report.system}")
    for note in report.inventory.notes:
        out.text(f"Note:   {note}")
    grouped = report.groups()
    for key, heading in GROUPS.items():
        out.text("")
        out.text(f"{heading}:")
        items = grouped[key]
        if not items:
            out.text("  <None>")
            continue
        rows = [
            (
                "*" if report.is_selected(item) else "",
                item.profile.id[:12],
                item.profile.name,
                gpus_text(item),
                memory_text(item),
                item.reason,
            )
            for item in items
        ]
        out.table(["", "ID", "NAME", "GPUS", "MEM/GPU", "WHY"], rows)
    out.text("")
    if report.selection is not None:
        out.text(f"Selected (*): {report.selection.profile.id}")
        out.text(f"  {report.selection.reason}")
    elif report.error is not None:
        out.text(f"Selected: none. {report.error.message}")
        if report.error.hint:
            out.text(f"  {report.error.hint}")


def print_summaries(out: Output, inventory: Any, rows: list[dict[str, Any]], nodes: int = 1) -> None:
    out.text(f"System: {system_text(inventory, nodes)}")
    table = []
    for row in rows:
        selected = row.get("selected")
        if selected:
            choice = f"{selected['id'][:12]}  {selected['name']}"
        else:
            choice = f"none: {row['error']}" if row.get("error") else "none"
        table.append((row["model"], row.get("runnable", ""), row.get("profiles", ""), choice))
    out.table(["MODEL", "RUNNABLE", "PROFILES", "SELECTED HERE"], table)
    out.text("Details: nimctl profiles list MODEL")


def print_profile(out: Output, manifest: Manifest, item: Classified, system: str, selected: bool) -> None:
    profile = item.profile
    memory = item.memory
    status = {"runnable": "runnable", "low_memory": "low memory", "incompatible": "incompatible"}[item.status]
    figures = (
        f"{gib(memory.total)} GiB = weights {gib(memory.weights)} "
        f"+ KV cache {gib(memory.kv_cache)} ({memory.context} tokens) "
        f"+ overhead {gib(memory.overhead)}"
    )
    if item.usable_per_gpu is not None:
        figures += f"; {gib(item.usable_per_gpu)} GiB usable per GPU here"
    rows: list[tuple[str, Any]] = [
        ("id", profile.id),
        ("name", profile.name),
        ("model", f"{manifest.model.name} ({manifest.path})"),
        ("description", profile.description),
        ("tags", ", ".join(f"{k}={v}" for k, v in profile.tags.items())),
        ("memory" + ("/GPU" if profile.device == "cuda" else ""), figures),
        ("engine args", shlex.join(profile.engine_args)),
        ("engine env", " ".join(f"{k}={v}" for k, v in profile.env.items()) or None),
        ("here", system),
        ("status", f"{status}: {item.reason}"),
    ]
    if selected:
        rows.append(("selected", "yes: the automatic choice here"))
    if item.fix and not item.runnable:
        rows.append(("to run it", item.fix))
    out.table(["FIELD", "VALUE"], rows)
