"""Entry point of the ``nimctl`` command: the root Typer app.

Its error handling is :mod:`nimctl._entry`'s, which ``nim-serve`` shares.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from nimctl import __version__
from nimctl._entry import HELP_MARKUP, ErrorHandlingGroup


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"nimctl {__version__}")
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    cacert: Annotated[
        Path | None,
        typer.Option(
            "--cacert",
            envvar="NIMCTL_CACERT",
            show_envvar=False,
            help="CA certificates (PEM) to trust for an https server nimctl did not start "
            "[env NIMCTL_CACERT]; nimctl's own instances are trusted by themselves.",
            show_default=False,
        ),
    ] = None,
) -> None:
    from nimctl.cli._target import use_cacert

    ctx.obj = {"debug": debug}
    use_cacert(str(cacert) if cacert else None)  # every run sets it: no value outlives its command


# Command name -> the module of nimctl.cli whose register() adds it, in the order of the help.
# One module per command group; each imports its library code inside the commands.
COMMAND_MODULES: dict[str, str] = {
    "serve": "serve",
    "build": "build",
    "run": "run",
    "generate": "generate",
    "pull": "pull",
    **dict.fromkeys(("ps", "logs", "stop"), "instances"),
    "top": "top",
    "doctor": "doctor",
    "env": "env",
    "chat": "chat",
    "health": "health",
    **dict.fromkeys(("tokenize", "detokenize", "render", "models"), "inspect"),
    **dict.fromkeys(("metadata", "version", "license", "manifest", "metrics"), "info"),
    **dict.fromkeys(("gpus", "profiles"), "profiles"),
    # Groups (Typer lists them after the plain commands).
    "cache": "cache",
    "bundle": "bundle",
    "lora": "lora",
    "bench": "bench",
}


def build_app(argv: Sequence[str] | None = None) -> typer.Typer:
    """The root app; given the command line, with only the module of the command it names.

    Building every command's parameters costs about a fifth of a `nimctl health` run, and
    a command runs the same whatever else is registered. `--help`, no command, an unknown
    one and shell completion get them all.
    """
    app = typer.Typer(
        name="nimctl",
        cls=ErrorHandlingGroup,
        help="Run and talk to a NIM-style LLM/VLM server on your own machine.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=HELP_MARKUP,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    named = _command_named(argv) if argv is not None and not os.environ.get("_NIMCTL_COMPLETE") else None
    if named in COMMAND_MODULES:
        modules = [COMMAND_MODULES[named]]
    for module in modules:
        importlib.import_module(f"nimctl.cli.{module}").register(app)
    return app


def _command_named(argv: Sequence[str]) -> str | None:
    """The first word that is not an option or the value of one (--cacert FILE)."""
    words = iter(argv)
    for word in words:
        if word == "--cacert":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def __getattr__(name: str) -> Any:
    # `app`, every command registered (tests, docs), is built on first use, not at import.
    if name == "app":
        app = globals()["app"] = build_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    build_app(sys.argv[1:])()
