"""Registers the commands that talk to a running server (one line in ``main.py`` for all of them)."""

from __future__ import annotations

import typer

from nimctl.cli import chat, health, info, inspect


def register(app: typer.Typer) -> None:
    chat.register(app)
    health.register(app)
    inspect.register(app)
    info.register(app)
