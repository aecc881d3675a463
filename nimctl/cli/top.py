"""``nimctl top``: a live, full-screen view of the running instances and the GPUs."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from nimctl.cli._common import FormatOption, output
from nimctl.output import Format


def top(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="Only this instance (nimctl ps).", show_default=False)
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame and exit (for pipes and scripts).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.2, help="Seconds between frames.")
    ] = 1.0,
    fmt: FormatOption = Format.table,
) -> None:
    """Watch the running instances live: requests, KV cache, tokens/s, TTFT and ITL over the
    last interval, idle time, GPU memory, and each GPU's utilisation, memory, temperature and
    power. Full screen, redrawn every second; q or Ctrl-C quits (exit 0). Without a terminal:
    --once."""
    from nimctl.errors import UsageError
    from nimctl.runtime.live import Watch

    out = output(ctx, fmt)
    watch = Watch(name)
    if once:
        from nimctl.cli.live_view import render_frame
        from nimctl.cli.top_screen import one_frame

        frame = one_frame(watch, interval=interval)
        out.result(frame.to_dict(), lambda: out.out.print(render_frame(frame)))
        return
    if out.is_json:
        hint = "nimctl top --once --format json"
        raise UsageError("--format json prints one frame: give --once too", hint=hint)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "nimctl top needs a terminal (its standard input and output)",
            hint="nimctl top --once prints one frame",
        )
    from nimctl.cli.top_screen import run_screen

    run_screen(watch, out.out, interval=interval)


def register(app: typer.Typer) -> None:
    app.command("top")(top)
