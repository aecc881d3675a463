"""What the commands share: the output sink, common options, and reading text from stdin."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from nimctl.errors import UsageError
from nimctl.output import Format, Output

FormatOption = Annotated[
    Format,
    typer.Option("--format", "-f", help="Output format: a human table/text, or JSON with stable keys."),
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model name [default: the server's only model].", show_default=False),
]
ImageOption = Annotated[
    list[str] | None,
    typer.Option(
        "--image", "-i", help="Image file or http(s) URL to ask about (repeatable).", show_default=False
    ),
]
CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache",
        help="The host model cache, as nimctl run --cache takes it [~/.cache/nimctl].",
        show_default=False,
    ),
]
SystemOption = Annotated[
    str | None, typer.Option("--system", "-s", help="System prompt.", show_default=False)
]


class Preference(StrEnum):
    """Between runnable profiles: the fewest GPUs (throughput) or the most (latency)."""

    throughput = "throughput"
    latency = "latency"


def model_cache(given: Path | None) -> Path:
    """The host model cache a command works on: ``--cache``, else the one ``nimctl run`` mounts."""
    from nimctl.contract import host_cache_dir

    return (given or host_cache_dir()).expanduser().resolve()


def output(ctx: typer.Context, fmt: Format = Format.table) -> Output:
    """The Output for this invocation, honouring the global --debug flag."""
    root = ctx.find_root()
    debug = bool(root.obj and root.obj.get("debug"))
    return Output(fmt, debug=debug)


def read_text_argument(text: str | None, what: str) -> str:
    """The argument; else standard input, when the argument is ``-`` or missing and stdin is no terminal.

    An argument never reads stdin too: `while read q; do nimctl chat "$q"; done < file` must
    not swallow the file, and a CI step whose stdin is an open pipe must not hang.
    """
    if text is not None and text != "-":
        return text
    if text == "-" or not sys.stdin.isatty():
        return sys.stdin.read().rstrip("\n")
    raise UsageError(f"no {what} given", hint=f"pass the {what} as an argument, or pipe it on standard input")
