"""Units and the few text forms every table and reason shares, so that all of them print alike.

Memory is counted in bytes everywhere and shown in GiB (2^30 bytes), which is what NVML and
``nvidia-smi`` report and what vLLM's ``--gpu-memory-utilization`` is a share of.
"""

from __future__ import annotations

GIB = 1024**3
GB = 1000**3  # spec sheets' "80 GB"; only --gpus ... @6GB reads it


def gib(value: int | float) -> str:
    """``13.1``: bytes as GiB with one decimal, for tables and reasons (the unit is the caller's)."""
    return f"{value / GIB:.1f}"


def gib_number(value: int | float) -> float:
    """Bytes as GiB rounded to 2 decimals, for JSON."""
    return round(value / GIB, 2)


def cc_text(cc: tuple[int, int] | None) -> str | None:
    """Compute capability ``(8, 9)`` as ``"8.9"``; None stays None."""
    return None if cc is None else f"{cc[0]}.{cc[1]}"


def normalise_name(name: str) -> str:
    """A GPU name folded for comparison: ``H100_NVL``, ``h100-nvl`` and ``H100 NVL`` are one name."""
    return "".join(ch for ch in name.lower() if ch.isalnum())
