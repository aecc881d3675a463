"""``nimctl bench --plot``: latency and throughput against concurrency, as a PNG or as text.

- :func:`check_plot_target`: whether a ``--plot FILE`` can be written (call it before the sweep,
  so a bad path or a missing matplotlib is reported before minutes of measuring, not after);
- :func:`write_plot`: one figure for one or more runs (a sweep, a profile sweep, a compare), one
  line per run: output tokens/s and requests/s on top, TTFT, ITL and end-to-end latency below;
- :func:`terminal_chart`: plain text lines (no matplotlib) for ``--plot`` given no file.

A run is ``(label, results)``, ``results`` being a sweep's ``SweepResult.to_dict()`` (a history
record, which holds it under ``"results"``, is taken too). Levels whose figures are None (every
request failed, or TTFT without streaming) are left out of the lines they lack, never an error.

matplotlib is an optional extra (``nimctl[bench]``), imported only here and only when drawing;
the figure is drawn on the Agg canvas directly, without pyplot, so no display is needed and no
global backend is switched in the caller's process.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.errors import UsageError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Run = tuple[str, Mapping[str, Any]]

INSTALL_HINT = "pip install 'nimctl[bench]'"
# A log2 axis once the levels span this factor (1,4,16,64): on a linear one 1 and 4 would touch.
LOG_SPAN = 8
# Latency panels: solid p50, dashed p99, in the run's colour.
P50_STYLE = "-"
P99_STYLE = "--"
GOODPUT_STYLE = ":"
EIGHTHS = " ▏▎▍▌▋▊▉"  # partial blocks, so that a bar is drawn to 1/8 of a character


def check_plot_target(path: Path) -> None:
    """Raise UsageError unless ``path`` can take a PNG and matplotlib is installed."""
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot writes a PNG: {path} does not end in .png", hint="e.g. --plot bench.png")
    if path.is_dir():
        raise UsageError(f"--plot {path} is a folder", hint="give a file name ending in .png")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"cannot write the plot: {folder} {what}", hint="create it or choose another")
    # os.access is advisory (root passes it everywhere); write_plot also turns the write's own
    # OSError into a UsageError.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the plot: folder {folder} is not writable", hint="choose another")
    _import_matplotlib()


def write_plot(runs: Sequence[Run], path: Path, *, title: str | None = None) -> None:
    """Draw ``runs`` against concurrency into the PNG ``path``.

    ``title`` heads the figure (the CLI passes the model); without it, "nimctl bench: MODEL" for
    the model the runs share, else "nimctl bench". Bad input raises UsageError: see
    :func:`check_plot_target`, and no runs at all.
    """
    path = Path(path)
    check_plot_target(path)
    if not runs:
        raise UsageError("nothing to plot: no runs")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(13, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    # Two throughput panels above, three latency panels below, on a grid of six columns.
    grid = figure.add_gridspec(2, 6)
    tokens = figure.add_subplot(grid[0, :3])
    requests = figure.add_subplot(grid[0, 3:])
    ttft = figure.add_subplot(grid[1, :2])
    itl = figure.add_subplot(grid[1, 2:4])
    e2e = figure.add_subplot(grid[1, 4:])
    colours = [f"C{index % 10}" for index in range(len(runs))]
    goodput_drawn = False
    for (_, results), colour in zip(runs, colours, strict=True):
        levels = _levels(results)
        _line(tokens, levels, ("output_tokens_per_s",), colour, P50_STYLE)
        _line(requests, levels, ("requests_per_s",), colour, P50_STYLE)
        goodput_drawn |= _line(requests, levels, ("goodput", "requests_per_s"), colour, GOODPUT_STYLE)
        for axes, key in ((ttft, "ttft_ms"), (itl, "itl_ms"), (e2e, "e2e_ms")):
            _line(axes, levels, (key, "p50"), colour, P50_STYLE)
            _line(axes, levels, (key, "p99"), colour, P99_STYLE)
    requests_title = "requests/s (dotted: goodput)" if goodput_drawn else "requests/s"
    panels = (
        (tokens, "output tokens/s"),
        (requests, requests_title),
        (ttft, "TTFT (ms): p50 solid, p99 dashed"),
        (itl, "ITL (ms): p50 solid, p99 dashed"),
        (e2e, "end-to-end latency (ms): p50 solid, p99 dashed"),
    )
    concurrencies = sorted({c for _, results in runs for c in _concurrencies(_levels(results))})
    for axes, name in panels:
        axes.set_title(name, fontsize=10)
        axes.set_xlabel("concurrency")
        axes.grid(True, alpha=0.3)
        _concurrency_axis(axes, concurrencies)
        if not axes.lines:
            axes.text(0.5, 0.5, "no figures", ha="center", va="center", transform=axes.transAxes)
        else:
            axes.set_ylim(bottom=0)
    if len(runs) > 1 or runs[0][0]:
        # Drawn from the runs, not from the lines: a run without figures is still named.
        handles = [
            Line2D([], [], color=colour, marker="o", markersize=4, label=label or f"run {number}")
            for number, ((label, _), colour) in enumerate(zip(runs, colours, strict=True), start=1)
        ]
        figure.legend(handles=handles, loc="outside upper right", ncols=min(len(runs), 4), fontsize=9)
    model = _shared_model(runs)
    figure.suptitle(title or (f"nimctl bench: {model}" if model else "nimctl bench"))
    _save(figure, path)


def terminal_chart(runs: Sequence[Run], *, width: int = 60) -> list[str]:
    """Text lines: per run, one bar per level of output tokens/s, TTFT p50 alongside.

    Every bar shares one scale (the highest output tokens/s of all runs, ``width`` characters),
    so that runs compare by eye.
    """
    if width < 1:
        raise UsageError(f"a chart needs a width of at least 1, not {width}")
    if not runs:
        raise UsageError("nothing to chart: no runs")
    tables = [(label, _levels(results)) for label, results in runs]
    rates = [_figure(level, ("output_tokens_per_s",)) for _, levels in tables for level in levels]
    top = max((rate for rate in rates if rate is not None), default=None)
    cells = [f"{c:,}" for _, levels in tables for c in _concurrencies(levels)]
    c_width = max((len(cell) for cell in cells), default=1)
    rate_width = max((len(f"{rate:,.1f}") for rate in rates if rate is not None), default=1)
    lines = ["output tokens/s by concurrency, TTFT p50 alongside"]
    for label, levels in tables:
        lines.append(label or "run")
        if not levels:
            lines.append("  no levels")
        for level in levels:
            concurrency = f"{level['concurrency']:,}".rjust(c_width)
            rate = _figure(level, ("output_tokens_per_s",))
            errors = _errors(level)
            # Every request failed: its 0 tok/s says less than that does.
            nothing = level.get("ok") == 0 and (level.get("requests") or 0) > 0
            if rate is None or top is None or nothing:
                what = "no successful requests" if nothing else "no figures"
                lines.append(f"  {concurrency} │{' ' * width}│ {what}{f' ({errors})' if errors else ''}")
                continue
            ttft = _figure(level, ("ttft_ms", "p50"))
            ttft_text = "n/a" if ttft is None else f"{ttft:,.1f} ms"
            bar = _bar(rate / top if top > 0 else 0.0, width)
            rate_text = f"{rate:,.1f}".rjust(rate_width)
            tail = f"  ({errors})" if errors else ""
            lines.append(f"  {concurrency} │{bar}│ {rate_text} tok/s  TTFT p50 {ttft_text}{tail}")
    return lines


def _import_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib", hint=INSTALL_HINT) from None


def _results(results: Mapping[str, Any]) -> Mapping[str, Any]:
    """A sweep's results, also when given the history record that holds them."""
    inner = results.get("results")
    return inner if "levels" not in results and isinstance(inner, Mapping) else results


def _levels(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The levels with an integer concurrency, by concurrency."""
    levels = _results(results).get("levels")
    found = [
        level
        for level in (levels if isinstance(levels, list) else ())
        if isinstance(level, Mapping) and _is_concurrency(level.get("concurrency"))
    ]
    return sorted(found, key=lambda level: level["concurrency"])


def _is_concurrency(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _concurrencies(levels: list[Mapping[str, Any]]) -> list[int]:
    return [level["concurrency"] for level in levels]


def _figure(level: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    """The number at ``keys`` in ``level``; None when missing, None, or not a finite number."""
    value: Any = level
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _line(
    axes: Axes,
    levels: list[Mapping[str, Any]],
    keys: tuple[str, ...],
    colour: str,
    style: str,
) -> bool:
    """Draw the levels that have the figure at ``keys``; False when none has it."""
    points = [(level["concurrency"], _figure(level, keys)) for level in levels]
    xs = [c for c, value in points if value is not None]
    ys = [value for _, value in points if value is not None]
    if not xs:
        return False
    axes.plot(xs, ys, style, color=colour, marker="o", markersize=4)
    return True


def _concurrency_axis(axes: Axes, concurrencies: list[int]) -> None:
    if not concurrencies:
        return
    low, high = concurrencies[0], concurrencies[-1]
    # The same span on every panel, whatever levels each could draw, so that they line up.
    if high / low >= LOG_SPAN:
        axes.set_xscale("log", base=2)
        axes.set_xlim(low / 2**0.25, high * 2**0.25)
    else:
        pad = (high - low) * 0.08 or 0.5
        axes.set_xlim(low - pad, high + pad)
    # Ticks at the measured levels only, written as the integers they are (not 2^4).
    shown = concurrencies if len(concurrencies) <= 12 else concurrencies[:: len(concurrencies) // 12 + 1]
    axes.set_xticks(shown, [str(c) for c in shown])
    axes.minorticks_off()


def _shared_model(runs: Sequence[Run]) -> str | None:
    models = {_results(results).get("model") for _, results in runs}
    model = models.pop() if len(models) == 1 else None
    return model if isinstance(model, str) and model else None


def _save(figure: Any, path: Path) -> None:
    # Written beside the target and renamed over it: a failed write leaves no truncated PNG.
    partial = path.with_name(f".{path.name}.partial")
    try:
        figure.savefig(partial, format="png")
        os.replace(partial, path)
    except OSError as error:
        raise UsageError(
            f"cannot write the plot to {path}: {error.strerror or error}", hint="choose another path"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _bar(fraction: float, width: int) -> str:
    eighths = round(max(0.0, min(fraction, 1.0)) * width * 8)
    full, rest = divmod(eighths, 8)
    bar = "█" * full + (EIGHTHS[rest] if rest else "")
    return bar.ljust(width)


def _errors(level: Mapping[str, Any]) -> str:
    """ "3 errors: http_5xx" (kinds by name), or "" when the level had none."""
    errors = level.get("errors")
    if not isinstance(errors, Mapping):
        return ""
    kinds = {str(kind): count for kind, count in errors.items() if isinstance(count, int) and count > 0}
    if not kinds:
        return ""
    total = sum(kinds.values())
    return f"{total:,} error{'s' if total > 1 else ''}: {', '.join(sorted(kinds))}"
