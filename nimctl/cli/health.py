"""``nimctl health``: is the server live, is it ready; ``--wait`` for CI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.cli._common import FormatOption, output
from nimctl.cli._target import ApiKeyOption, UrlOption, make_client
from nimctl.output import Format

if TYPE_CHECKING:
    from nimctl.client.http import NimClient
    from nimctl.client.types import HealthReport
    from nimctl.output import Output

DEFAULT_WAIT_S = 900.0  # NIM's Helm chart allows about 30 minutes; most models load well within 15
PROBE_TIMEOUT_S = 10.0


def register(app: typer.Typer) -> None:
    app.command("health")(health)


def health(
    ctx: typer.Context,
    wait: Annotated[
        bool, typer.Option("--wait", help="Poll until the server is ready (or live, with --live).")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0,
            help=f"Seconds --wait waits [default {DEFAULT_WAIT_S:g}]; without --wait, the probe's limit.",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between polls with --wait.")
    ] = 1.0,
    live: Annotated[bool, typer.Option("--live", help="Check liveness only (the process answers).")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Show whether the server is live and ready. Exit 0 when ready (or live, with --live).

    Exit codes: 3 unreachable, 4 live but not ready, 5 --wait timed out.
    """
    from nimctl.errors import ServerNotReadyError, UsageError

    out = output(ctx, fmt)
    if timeout == 0 and not wait:
        raise UsageError(
            "--timeout 0 leaves the probe no time", hint="give a positive --timeout, or add --wait"
        )
    # Without --wait, --timeout is the probe's own limit. With it, each probe keeps its usual
    # limit (shortened to fit a shorter wait), and `--wait --timeout 0` is a single probe.
    if not wait:
        probe_timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    else:
        probe_timeout = PROBE_TIMEOUT_S if not timeout else min(PROBE_TIMEOUT_S, timeout)
    with make_client(url, api_key, timeout=probe_timeout) as client:
        if wait:
            report = _wait(out, client, DEFAULT_WAIT_S if timeout is None else timeout, interval, live)
        else:
            report = client.health(live_only=live)
    _print(out, report, live_only=live)
    if not live and not report.ready:
        raise ServerNotReadyError(
            f"{report.url} is live but not ready: {report.message or 'loading'}",
            hint="wait for it with `nimctl health --wait`",
        )


def _wait(out: Output, client: NimClient, timeout: float, interval: float, live: bool) -> HealthReport:
    """Wait with a spinner on a terminal, silently in a pipe."""
    target = "live" if live else "ready"
    if not out.interactive:
        return client.wait_until_ready(timeout, interval=interval, live_only=live)
    from rich.markup import escape

    with out.err.status(f"waiting for the server to be {target}...") as status:

        def on_poll(state: str, elapsed: float) -> None:
            # The state holds the server's own words: text, not Rich markup.
            status.update(
                f"waiting for the server to be {target}: {escape(state)} [{elapsed:.0f}/{timeout:g} s]"
            )

        return client.wait_until_ready(timeout, interval=interval, live_only=live, on_poll=on_poll)


def _print(out: Output, report: HealthReport, *, live_only: bool) -> None:
    data = {
        "url": report.url,
        "live": report.live,
        "ready": None if live_only else report.ready,
        "message": report.message,
    }

    def render() -> None:
        lines = [f"url:     {report.url}", f"live:    {_yes(report.live)}"]
        if not live_only:
            lines.append(f"ready:   {_yes(report.ready)}")
        if report.message:
            lines.append(f"message: {report.message}")
        out.text("\n".join(lines))

    out.result(data, render)


def _yes(value: bool) -> str:
    return "yes" if value else "no"
