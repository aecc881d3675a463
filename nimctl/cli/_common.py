"""What every command shares: the output sink and the --format option."""

from __future__ import annotations

from typing import Annotated

import typer

from nimctl.output import Format, Output

FormatOption = Annotated[
    Format,
    typer.Option("--format", "-f", help="Output format: a human table/text, or JSON with stable keys."),
]


def output(ctx: typer.Context, fmt: Format = Format.table) -> Output:
    """The Output for this invocation, honouring the global --debug flag."""
    root = ctx.find_root()
    debug = bool(root.obj and root.obj.get("debug"))
    return Output(fmt, debug=debug)
