"""``nimctl serve``: ``nim-serve`` under nimctl, the same command (:mod:`nimctl.server.command`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    # Only the command's own module: what it starts is imported when it runs.
    from nimctl.server.command import ENGINE_ARGS, HELP, serve

    app.command("serve", context_settings=ENGINE_ARGS, help=HELP)(serve)
