"""``nim-serve``, the container's entry point (and ``nimctl serve``): run the front server.

The command lives with the server it starts, and ``nimctl serve`` registers this same
function. Being an entry point, it declares its command line with Typer, as the CLI does;
the modules of the server it starts (config, plan, runner) stay free of it, and are
imported only when the command runs, so registering it costs ``nimctl --help`` nothing.
nimctl's error handling comes from :mod:`nimctl._entry`, below both: the server never
imports the CLI.
"""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

# Arguments after the options are vLLM's: they pass through unparsed.
ENGINE_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
HELP = (
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
        from nimctl.output import Output

        described = plan.describe()
        described["engine_command_line"] = shlex.join(described["engine_command"])
        Output().json(described)  # always JSON: the configuration as the container resolves it
        return
    from nimctl.server.runner import serve as run_server
    from nimctl.server.runner import serve_worker

    code = serve_worker(plan) if plan.node.is_worker else run_server(plan)
    if code:
        raise typer.Exit(code)


def main() -> None:
    """``nim-serve``: the same command as ``nimctl serve``, with the same error handling."""
    from nimctl._entry import run_standalone

    run_standalone(serve, "nim-serve", context_settings=ENGINE_ARGS, help=HELP)
