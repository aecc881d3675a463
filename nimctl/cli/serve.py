"""``nimctl serve`` and the ``nim-serve`` entry point of the container: run the front server."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from nimctl.cli._common import output

_ENGINE_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
_HELP = (
    "Start the NIM server: the front on NIM_SERVER_PORT at once, then the vLLM engine behind it. "
    "Configured by NIM_* environment variables; arguments after the options go to vLLM and win over "
    "NIM_PASSTHROUGH_ARGS (except the flags the front sets itself, such as --port and --model, which "
    "are refused)."
)


def serve(
    ctx: typer.Context,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the resolved configuration and engine command, then exit."),
    ] = False,
) -> None:
    from nimctl.server.config import ServerConfig
    from nimctl.server.plan import build_plan

    plan = build_plan(ServerConfig.from_env(), list(ctx.args))
    if dry_run:
        described = plan.describe()
        described["engine_command_line"] = shlex.join(described["engine_command"])
        output(ctx).json(described)
        return
    from nimctl.server.runner import serve as run_server

    code = run_server(plan)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("serve", context_settings=_ENGINE_ARGS, help=_HELP)(serve)


def main() -> None:
    """``nim-serve``: the same command as ``nimctl serve``, with the same error handling."""
    from nimctl.cli.main import run_standalone

    run_standalone(serve, "nim-serve", context_settings=_ENGINE_ARGS, help=_HELP)
