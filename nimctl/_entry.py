"""nimctl's error handling for console scripts: ``Error:``/``Hint:`` lines and exit codes.

Both ``nimctl`` (:mod:`nimctl.cli.main`) and ``nim-serve`` (:mod:`nimctl.server.command`)
run through it, so it sits below both: the server must not import the CLI to get it, and
the CLI must not reach into the server. It is an entry-point helper, not library code, so
unlike the library packages it uses Typer (and the click inside it): that is where
command-line errors and exits come from.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from nimctl.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_UNEXPECTED, EXIT_USAGE, NimctlError

# Help text is plain: Rich markup would eat the "[env NIMCTL_URL; default: ...]" in option help.
HELP_MARKUP = None
# Typer 0.29 vendors click and older ones use click itself; either way this is that click's
# UsageError (the base of typer.BadParameter), not nimctl's.
CommandLineError: type[Exception] = typer.BadParameter.__mro__[1]


class _ErrorHandling:
    """Turns nimctl's exceptions into ``Error:``/``Hint:`` lines and documented exit codes."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        # The root's own options are parsed here, before invoke() can see their errors.
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except CommandLineError as exc:
            _report_command_line_error(exc, None, info_name)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CommandLineError as exc:
            _report_command_line_error(exc, ctx)
        except NimctlError as exc:
            _report(ctx, exc, exc.hint or _default_hint(ctx, exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader left (`nimctl metrics --raw | head`): nothing to tell it. Later writes,
            # the interpreter's last flush included, go nowhere instead of failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except Exception as exc:
            if _is_cli_control_flow(exc):
                raise  # exits, aborts and --help: the CLI framework's own to print
            _report(ctx, exc, "this is a bug in nimctl; run again with --debug and report the traceback")
            raise typer.Exit(EXIT_UNEXPECTED) from None


class ErrorHandlingGroup(_ErrorHandling, TyperGroup):
    """nimctl's root group: every command's errors become Error/Hint lines and exit codes."""


class ErrorHandlingCommand(_ErrorHandling, TyperCommand):
    """A command that is its own console script (``nim-serve``), with the same error handling."""


def run_standalone(command: Callable[..., Any], prog_name: str, **settings: Any) -> None:
    """Run one command function as its own console script (``nim-serve``), with nimctl's error
    handling; ``settings`` go to ``Typer.command`` (help, context_settings)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=HELP_MARKUP)
    app.command(cls=ErrorHandlingCommand, **settings)(command)
    app(args=sys.argv[1:], prog_name=prog_name)


def _help_target(ctx: Any) -> str:
    """The command whose --help a hint points at: ``nimctl stop``, ``nimctl profiles``, ``nim-serve``."""
    if ctx is None:
        return "nimctl"
    if ctx.parent is None and ctx.invoked_subcommand:
        return f"{ctx.command_path} {ctx.invoked_subcommand}"
    return str(ctx.command_path)


def _default_hint(ctx: Any, exc: NimctlError) -> str | None:
    """For an error raised without a hint: where to read about what was refused."""
    from nimctl.errors import ManifestError, UsageError

    if isinstance(exc, ManifestError):
        return "docs/profiles.md describes the manifest format; `nimctl profiles list` checks a file"
    if isinstance(exc, UsageError):
        return f"see '{_help_target(ctx)} --help'"
    return None


def _report_command_line_error(exc: Any, invoking: Any, name: str | None = None) -> NoReturn:
    """A command line Typer could not parse, said as nimctl says every error: Error/Hint, exit 2.

    ``invoking`` is the group's context: the parser's error carries none for some mistakes
    (an option without its value), and the group knows which command it was resolving; before
    any context exists, ``name`` is the program's.
    """
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc  # `nimctl` alone: the help is the answer
    ctx = exc.ctx or invoking
    target = _help_target(ctx) if ctx is not None else name or "nimctl"
    _report(ctx, exc.format_message(), f"see '{target} --help'")
    raise typer.Exit(EXIT_USAGE) from None


def _is_cli_control_flow(exc: Exception) -> bool:
    # Typer 0.29 raises its own vendored copy of click's exceptions, so match by origin.
    return type(exc).__module__.split(".")[0] in {"typer", "click"}


def _report(ctx: Any, exc: BaseException | str, hint: str | None) -> None:
    from nimctl.output import Output

    root = ctx.find_root() if ctx is not None else None
    debug = bool(root is not None and root.obj and root.obj.get("debug"))
    if isinstance(exc, str):
        message = exc
    else:
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        message = str(exc) or type(exc).__name__
    Output(debug=debug).error(message.splitlines()[0], hint)
