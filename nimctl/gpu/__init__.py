"""GPU inventory: the real one through NVML, or one described with ``--gpus`` / ``NIMCTL_ASSUME_GPUS``."""

from __future__ import annotations

import os

from nimctl.gpu.catalog import CatalogEntry, catalog, lookup, parse_gpu_spec
from nimctl.gpu.inventory import GIB, GPU, Inventory

ASSUME_ENV = "NIMCTL_ASSUME_GPUS"

__all__ = [
    "ASSUME_ENV",
    "GIB",
    "GPU",
    "CatalogEntry",
    "Inventory",
    "catalog",
    "detect_inventory",
    "lookup",
    "parse_gpu_spec",
]


def detect_inventory(spec: str | None = None) -> Inventory:
    """``spec`` (``--gpus``) if given, else ``$NIMCTL_ASSUME_GPUS`` if set, else what NVML reads."""
    if spec is None:
        spec = os.environ.get(ASSUME_ENV) or None
    if spec is not None:
        return parse_gpu_spec(spec)
    from nimctl.gpu.nvml import read_nvml

    return read_nvml()
