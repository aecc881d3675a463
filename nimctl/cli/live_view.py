"""How ``ps`` and ``top`` show the live figures: ps's cells, and top's frame as Rich renderables.

No Typer here and no reading: :mod:`nimctl.runtime.live` samples, this only formats.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

    from nimctl.gpu.readings import GpuReading
    from nimctl.runtime.instances import LiveFigures
    from nimctl.runtime.live import Frame, FrameRow

BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 30


def short_duration(seconds: float | None) -> str:
    """``45s``, ``3m``, ``1h05m``: a column's worth (ps's IDLE, top's)."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def idle_cell(live: LiveFigures | None) -> str:
    """``3m``, or ``3m (stop in 27m)`` when an idle stop is set."""
    if live is None or live.idle_s is None:
        return "-"
    if live.idle_stop_in_s is None:
        return short_duration(live.idle_s)
    return f"{short_duration(live.idle_s)} (stop in {short_duration(live.idle_stop_in_s)})"


def mib_text(mib: float | None) -> str:
    if mib is None:
        return "-"
    return f"{mib / 1024:.1f}G" if mib >= 1024 else f"{mib:.0f}M"


def gpu_memory_cell(gpu_memory: list[dict[str, Any]] | None) -> str:
    """``0:1.2G 1:1.2G`` (GPU index: memory the instance's processes hold); ``-`` with none."""
    if not gpu_memory:
        return "-"
    return " ".join(f"{entry['index']}:{mib_text(entry['used_mib'])}" for entry in gpu_memory)


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def requests_cell(running: float | None, waiting: float | None) -> str:
    """``running/waiting``."""
    if running is None and waiting is None:
        return "-"
    return f"{number(running, 0)}/{number(waiting, 0)}"


def kv_cell(pct: float | None) -> str:
    """Whole per cents, and one decimal below 10 % (a small model's cache is rarely more)."""
    if pct is None:
        return "-"
    return f"{pct:.1f}%" if 0 < pct < 10 else f"{pct:.0f}%"


def live_cells(live: LiveFigures | None) -> tuple[str, str, str, str, str]:
    """ps's IDLE, REQS, KV, TOK/S (generated) and GPU MEM cells."""
    if live is None:
        return ("-",) * 5  # type: ignore[return-value]
    return (
        idle_cell(live),
        requests_cell(live.requests_running, live.requests_waiting),
        kv_cell(live.kv_cache_usage_pct),
        number(live.generation_tokens_per_s),
        gpu_memory_cell(live.gpu_memory),
    )


def sparkline(values: Sequence[float | None], width: int = SPARK_WIDTH, top: float | None = None) -> str:
    """The values as at most ``width`` block characters, scaled to ``top`` (default: their
    maximum); more values than ``width`` are taken in groups, each its highest (a peak stays
    visible). A missing value is a space, a zero the lowest block."""
    shown = _fit(list(values), width)
    known = [v for v in shown if v is not None]
    ceiling = top if top is not None else max(known, default=0.0)
    chars = []
    for value in shown:
        if value is None:
            chars.append(" ")
        elif ceiling <= 0:
            chars.append(BLOCKS[0])
        else:
            level = round(min(value, ceiling) / ceiling * (len(BLOCKS) - 1))
            chars.append(BLOCKS[max(0, level)])
    return "".join(chars).rjust(width)


def _fit(values: list[float | None], width: int) -> list[float | None]:
    if len(values) <= width:
        return values
    size = -(-len(values) // width)  # ceiling: groups of this many, the newest group last
    start = len(values) - size * (len(values) // size)
    groups = [values[start + i : start + i + size] for i in range(0, len(values) - start, size)]
    if start:
        groups.insert(0, values[:start])
    return [max((v for v in group if v is not None), default=None) for group in groups][-width:]


def seconds_text(value: float | None) -> str:
    """A latency: ``850ms``, ``1.25s``."""
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def headline(frame: Frame) -> str:
    """One line of totals over every instance (the test under a terminal reads it too)."""
    running = sum(row.live.requests_running or 0 for row in frame.rows)
    waiting = sum(row.live.requests_waiting or 0 for row in frame.rows)
    generated = sum((row.interval.generation_tokens_per_s or 0) for row in frame.rows if row.interval)
    clock = time.strftime("%H:%M:%S", time.localtime(frame.wall_time))
    count = len(frame.rows)
    return (
        f"nimctl top  {clock}  {count} instance{'s' if count != 1 else ''}  "
        f"requests {running} running {waiting} waiting  {generated:.1f} gen tok/s"
    )


def render_frame(frame: Frame, *, footer: str | None = None) -> RenderableType:
    """The whole screen: the totals line, a table of instances, a table of GPUs."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = [Text(headline(frame), style="bold")]
    if frame.note:
        parts.append(Text(frame.note, style="yellow"))
    if frame.rows:
        table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
        for column in (
            "NAME", "STATE", "UPTIME", "IDLE", "REQS", "KV", "PROMPT/S", "GEN/S", "TTFT", "ITL", "GPU MEM",
        ):  # fmt: skip
            table.add_column(column, no_wrap=True, justify="left" if column in {"NAME", "STATE"} else "right")
        table.add_column(f"GEN/S, last {frame.history_s}s", no_wrap=True)
        table.add_column(f"KV, last {frame.history_s}s", no_wrap=True)
        for row in frame.rows:
            table.add_row(*_instance_cells(row))
        parts.append(table)
    else:
        parts.append(
            Text("no instances running" if frame.name is None else f"no instance {frame.name} running")
        )
    parts.append(Text(""))
    parts.append(_gpu_part(frame))
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)


def _instance_cells(row: FrameRow) -> list[str]:
    live, instance, grown = row.live, row.instance, row.interval
    state = instance.state if instance.ready is None else ("ready" if instance.ready else "not ready")
    if live.live_error:
        state += f" ({live.live_error})"
    uptime = instance.uptime_s()
    return [
        instance.name,
        state,
        short_duration(uptime),
        idle_cell(live),
        requests_cell(live.requests_running, live.requests_waiting),
        kv_cell(live.kv_cache_usage_pct),
        number(grown.prompt_tokens_per_s if grown else None),
        number(grown.generation_tokens_per_s if grown else None),
        seconds_text(grown.ttft_s if grown else None),
        seconds_text(grown.itl_s if grown else None),
        gpu_memory_cell(live.gpu_memory),
        sparkline(row.generation_history),
        sparkline(row.kv_history, top=100.0),
    ]


def _gpu_part(frame: Frame) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    readings = frame.readings
    if readings is None:
        return Text("GPUs: NVML did not answer in time")
    if not readings.gpus:
        return Text(f"GPUs: none ({readings.reason})" if readings.reason else "GPUs: none")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("GPU", "NAME", "UTIL", "MEMORY", "TEMP", "POWER"):
        table.add_column(column, no_wrap=True, justify="left" if column == "NAME" else "right")
    for gpu in readings.gpus:
        table.add_row(*_gpu_cells(gpu))
    return table


def _gpu_cells(gpu: GpuReading) -> list[str]:
    mib = 2**20
    memory = "-"
    if gpu.memory_used is not None and gpu.memory_total is not None:
        memory = f"{mib_text(gpu.memory_used / mib)} / {mib_text(gpu.memory_total / mib)}"
    power = "-" if gpu.power_w is None else f"{gpu.power_w:.0f} W"
    if gpu.power_w is not None and gpu.power_limit_w:
        power += f" / {gpu.power_limit_w:.0f} W"
    return [
        str(gpu.index),
        gpu.name,
        "-" if gpu.utilization_pct is None else f"{gpu.utilization_pct}%",
        memory,
        "-" if gpu.temperature_c is None else f"{gpu.temperature_c}°C",
        power,
    ]
