"""``nimctl ps``, ``logs`` and ``stop``: the instances of both runtimes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.cli._common import FormatOption, output
from nimctl.output import Format
from nimctl.runtime.instances import STOP_TIMEOUT_S
from nimctl.runtime.live import PS_DEADLINE_S

if TYPE_CHECKING:
    from nimctl.output import Output
    from nimctl.runtime.instances import Stopped

# The profile is left to --format json (profile_name, profile_id): with the live figures, its
# name (vllm-fp32-tp1-pp1-cpu) would push the table past 120 columns, where Rich cuts URLs short.
COLUMNS = (
    "NAME", "MODEL", "RUNTIME", "STATE", "READY", "URL", "UPTIME", "IDLE", "REQS", "KV", "TOK/S", "GPU MEM",
)  # fmt: skip


def ps(
    ctx: typer.Context,
    all_states: Annotated[bool, typer.Option("--all", "-a", help="Also instances that have ended.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=0.05, help="Seconds to wait for the instances' live figures (all asked at once)."
        ),
    ] = PS_DEADLINE_S,
    fmt: FormatOption = Format.table,
) -> None:
    """List nimctl's instances (containers and host processes) with live figures read from each:
    readiness, requests running/waiting, KV cache, tokens/s, idle time, GPU memory."""
    from nimctl.cli.live_view import live_cells
    from nimctl.cli.progress import format_duration
    from nimctl.runtime.group import nodes_summary
    from nimctl.runtime.live import fill_live
    from nimctl.runtime.manage import list_instances

    out = output(ctx, fmt)
    instances, note = list_instances(all_states=all_states, readiness=False)
    if note:
        out.warn(note)
    fill_live(instances, deadline=timeout)

    def render() -> None:
        if not instances:
            out.info("no instances" + ("" if all_states else " running (--all shows ended ones)"))
            return
        # A group's row says its node count and its workers' states; the column only when one is listed.
        grouped = any(instance.nodes > 1 or instance.members for instance in instances)
        rows = []
        for instance in instances:
            state = instance.state
            if instance.exit_code is not None:
                state = f"{state} ({instance.exit_code}{': idle stop' if instance.idle_stopped else ''})"
            ready = "-" if instance.ready is None else ("yes" if instance.ready else "no")
            if instance.live is not None and instance.live.live_error and instance.running:
                error = instance.live.live_error
                ready += f" ({error})" if instance.ready is None else f" (metrics: {error})"
            uptime = instance.uptime_s()
            rows.append(
                (
                    instance.name,
                    instance.model,
                    instance.runtime,
                    state,
                    ready,
                    instance.url,
                    "-" if uptime is None else format_duration(uptime),
                    *live_cells(instance.live),
                )
            )
            if grouped:
                rows[-1] = (*rows[-1], nodes_summary(instance))
        out.table((*COLUMNS, "NODES") if grouped else COLUMNS, rows)

    out.result([instance.to_dict() for instance in instances], render)


def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name (nimctl ps).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", min=0, help="Only the last N lines.", show_default=False)
    ] = None,
) -> None:
    """Print an instance's log (the container's output, or the host process's log file); a
    multi-node group's: every member's, each line tagged [node0], [node1], ..."""
    from nimctl.runtime.manage import instance_logs

    out = output(ctx)
    try:
        for line in instance_logs(name, follow=follow, tail=tail):
            out.text(line)
    except KeyboardInterrupt:
        return


def stop(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Instance name (nimctl ps).", show_default=False)] = None,
    all_instances: Annotated[bool, typer.Option("--all", "-a", help="Stop every nimctl instance.")] = False,
    timeout: Annotated[
        int, typer.Option("--timeout", "-t", min=0, help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = STOP_TIMEOUT_S,
) -> None:
    """Stop an instance (SIGTERM, wait, then SIGKILL) and remove it; a multi-node group: all its
    nodes, and its network."""
    from nimctl.errors import UsageError
    from nimctl.runtime.manage import stop_all, stop_instance

    out = output(ctx)
    if all_instances == (name is not None):
        raise UsageError("give an instance NAME or --all (not both)")
    if not all_instances:
        _report_stopped(out, stop_instance(name or "", timeout=timeout))
        return
    result = stop_all(timeout=timeout)
    if result.note:
        out.warn(result.note)
    if not result.stopped and not result.failed:
        out.info("no local instances to stop" if result.note else "no instances to stop")
    for stopped in result.stopped:
        _report_stopped(out, stopped)
    for failed_name, error in result.failed:
        out.warn(f"{failed_name}: not stopped: {error.message}")
    if result.failed:
        # The first failure decides the exit code; each was reported above.
        first = result.failed[0][1]
        first.message = f"{len(result.failed)} instance(s) not stopped; first: {first.message}"
        raise first


def _report_stopped(out: Output, result: Stopped) -> None:
    instance = result.instance
    if result.was_running:
        how = "stopped and removed"
    elif instance.state == "gone":
        how = "already gone (removed meanwhile)"
    elif instance.exit_code is not None:
        how = f"had already exited with code {instance.exit_code}; removed"
    else:
        how = f"was {instance.state}; removed"
    nodes = f" (all {len(instance.members)} nodes)" if len(instance.members) > 1 else ""
    out.text(f"{instance.name}: {how}{nodes}")


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("logs")(logs)
    app.command("stop")(stop)
