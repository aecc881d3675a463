"""Entry point of the ``nimctl`` command: the root Typer app and its error handling."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from nimctl import __version__
from nimctl.errors import EXIT_UNEXPECTED, NimctlError


class _ErrorHandlingGroup(TyperGroup):
    """Turns nimctl's exceptions into ``Error:``/``Hint:`` lines and documented exit codes."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NimctlError as exc:
            _report(ctx, exc, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if _is_cli_control_flow(exc):
                raise  # exits, aborts, usage errors and --help: the CLI framework's own to print
            _report(ctx, exc, "this is a bug in nimctl; run again with --debug and report the traceback")
            raise typer.Exit(EXIT_UNEXPECTED) from None


def _is_cli_control_flow(exc: Exception) -> bool:
    # Typer 0.29 raises its own vendored copy of click's exceptions, so match by origin.
    return type(exc).__module__.split(".")[0] in {"typer", "click"}


def _report(ctx: Any, exc: BaseException, hint: str | None) -> None:
    from nimctl.output import Output

    debug = bool(ctx.obj and ctx.obj.get("debug"))
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = str(exc) or type(exc).__name__
    Output(debug=debug).error(message.splitlines()[0], hint)


app = typer.Typer(
    name="nimctl",
    cls=_ErrorHandlingGroup,
    help="Run and talk to a NIM-style LLM/VLM server on your own machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"nimctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    ctx.obj = {"debug": debug}


# One module per command group; each adds its commands. Modules import their library code
# inside the commands, so that registering them all stays cheap.
from nimctl.cli import client_commands, profiles, runtime, serve  # noqa: E402

for _group in (serve, runtime, client_commands, profiles):
    _group.register(app)


def main() -> None:
    app()
