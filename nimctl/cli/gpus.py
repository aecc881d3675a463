"""``nimctl gpus``: the GPU inventory profile selection works from (NVML, or ``--assume-gpus``).

Two option names for two grammars: ``--assume-gpus H100-80GB:8`` describes hardware that is not
here (``gpus``, ``profiles ...``, ``list-model-profiles``, and ``run`` for planning), while
``nimctl run --gpus 0,1`` picks devices of this machine. ``--gpus SPEC`` on the commands that
describe hardware is the old spelling of ``--assume-gpus``: hidden, still read, with a note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.cli._common import FormatOption, output
from nimctl.errors import UsageError
from nimctl.output import Format, Output

if TYPE_CHECKING:
    from nimctl.gpu import Inventory

# The grammar of SPEC (nimctl.gpu.parse_gpu_spec), for every option that takes one.
ASSUME_GPUS_GRAMMAR = (
    "NAME[:COUNT][@FREE],... with FREE in GiB (6, 6GiB) or GB (6GB), e.g. H100-80GB:8, L40S:2, "
    "A100-80GB:1@6GiB, none (also $NIMCTL_ASSUME_GPUS). `nimctl gpus --catalog` lists the names."
)
AssumeGpusOption = Annotated[
    str | None,
    typer.Option(
        "--assume-gpus",
        metavar="SPEC",
        help=f"Assume these GPUs instead of reading this machine's: {ASSUME_GPUS_GRAMMAR}",
        show_default=False,
    ),
]
OldGpusOption = Annotated[
    str | None,
    typer.Option("--gpus", metavar="SPEC", hidden=True, help="Old spelling of --assume-gpus."),
]


def assumed_inventory(out: Output, assume_gpus: str | None, old_gpus: str | None) -> Inventory:
    """The GPUs to judge profiles on: ``--assume-gpus`` (or its old spelling ``--gpus``), else
    ``$NIMCTL_ASSUME_GPUS``, else this machine's. The old spelling gets a note on stderr once the
    value has been read (a bad one is its error alone)."""
    from nimctl.gpu import detect_inventory

    if assume_gpus is not None and old_gpus is not None:
        raise UsageError("--gpus SPEC is the old spelling of --assume-gpus: give one of them")
    inventory = detect_inventory(assume_gpus if assume_gpus is not None else old_gpus)
    if old_gpus is not None:
        out.info(f"Note: --gpus {old_gpus} describes hardware; it is now spelled --assume-gpus")
    return inventory


def register(app: typer.Typer) -> None:
    app.command("gpus")(gpus)


def gpus(
    ctx: typer.Context,
    assume_gpus: AssumeGpusOption = None,
    old_gpus: OldGpusOption = None,
    catalog: Annotated[
        bool, typer.Option("--catalog", help="List the GPUs --assume-gpus knows (the built-in catalogue).")
    ] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """The GPUs nimctl sees through NVML (or the ones --assume-gpus describes); no GPU is a normal answer."""
    out = output(ctx, fmt)
    if catalog:
        _print_catalog(out)
        return
    from nimctl.gpu.units import cc_text, gib

    inventory = assumed_inventory(out, assume_gpus, old_gpus)

    def show() -> None:
        if not inventory.gpus:
            out.text(f"No GPU: {inventory.reason or 'none visible'}. Device: cpu.")
            return
        rows = [
            (
                gpu.index,
                gpu.name,
                gpu.pci_id,
                f"{gib(gpu.memory_total)} GiB",
                "" if gpu.memory_used is None else f"{gib(gpu.memory_used)} GiB",
                f"{gib(gpu.memory_free)} GiB",
                "" if gpu.utilization_pct is None else f"{gpu.utilization_pct}%",
                cc_text(gpu.compute_capability) or "",
                {True: "on", False: "off", None: ""}[gpu.mig_mode],
                gpu.catalog_key or "(not in catalogue)",
                gpu.uuid or "",
            )
            for gpu in inventory.gpus
        ]
        out.table(
            ["#", "NAME", "PCI ID", "MEMORY", "USED", "FREE", "UTIL", "CC", "MIG", "CATALOGUE", "UUID"], rows
        )
        if inventory.source == "assumed":
            out.text("Assumed with --gpus / NIMCTL_ASSUME_GPUS (not read from this machine). Device: cuda.")
        else:
            driver, cuda = inventory.driver_version or "?", inventory.cuda_driver_version or "?"
            out.text(f"Driver {driver}, CUDA {cuda}. Device: cuda.")
        for note in inventory.notes:
            out.text(note)

    out.result(inventory.to_dict(), show)


def _print_catalog(out: Output) -> None:
    from nimctl.gpu import catalog
    from nimctl.gpu.units import cc_text

    entries = catalog()
    data = [
        {
            "key": e.key,
            "family": e.family,
            "aliases": list(e.aliases),
            "pci_ids": list(e.pci_ids),
            "memory_gib": e.memory_gib,
            "compute_capability": cc_text(e.compute_capability),
        }
        for e in entries
    ]

    def show() -> None:
        rows = [
            (
                d["key"],
                d["family"],
                ", ".join(d["pci_ids"]),
                f"{d['memory_gib']:g} GiB",
                d["compute_capability"],
                ", ".join(d["aliases"]),
            )
            for d in data
        ]
        out.table(["NAME", "FAMILY (gpu tag)", "PCI ID", "MEMORY", "CC", "ALIASES"], rows)

    out.result(data, show)
