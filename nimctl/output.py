"""The one place that prints.

Results go to stdout (Rich tables and text, or JSON with ``--format json``); progress,
warnings, errors and hints go to stderr. Colour and spinners are off when the stream is
not a terminal or ``NO_COLOR`` is set. Rich is imported on first use so that commands
that print little stay quick to start.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class Format(StrEnum):
    table = "table"
    json = "json"


def _wants_colour(stream: Any) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Output:
    """Where every command writes. One instance per CLI invocation."""

    def __init__(self, fmt: Format = Format.table, *, debug: bool = False) -> None:
        self.format = fmt
        self.debug = debug
        self._out: Console | None = None
        self._err: Console | None = None

    # -- consoles ---------------------------------------------------------------
    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = self._console(sys.stdout)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = self._console(sys.stderr)
        return self._err

    @staticmethod
    def _console(stream: Any) -> Console:
        from rich.console import Console

        colour = _wants_colour(stream)
        return Console(
            file=stream,
            no_color=not colour,
            highlight=False,
            force_terminal=colour or None,
            soft_wrap=not colour,
            # In a pipe nothing wraps (unless COLUMNS says so): 64-hex ids must reach grep whole.
            width=None if colour or os.environ.get("COLUMNS") else 1000,
        )

    @property
    def interactive(self) -> bool:
        """True when stderr is a terminal: progress displays are worth drawing."""
        return _wants_colour(sys.stderr)

    @property
    def is_json(self) -> bool:
        return self.format is Format.json

    # -- results (stdout) -------------------------------------------------------
    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def text(self, text: str) -> None:
        """Plain text to stdout, printed verbatim (no markup, no wrapping)."""
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def write(self, text: str) -> None:
        """Text to stdout exactly as given, flushed at once (a reply streamed piece by piece)."""
        sys.stdout.write(text)
        sys.stdout.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
    ) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, box=None, header_style="bold", pad_edge=False)
        for column in columns:
            table.add_column(column)
        for row in rows:
            # Cells are plain text: read as Rich markup, a profile's "[b33567e9fad1]" would vanish.
            table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
        self.out.print(table)

    def result(self, data: Any, render: Any = None) -> None:
        """JSON when asked for, else call ``render()`` (which prints the human form)."""
        if self.is_json or render is None:
            self.json(data)
        else:
            render()

    # -- diagnostics (stderr) ---------------------------------------------------
    def info(self, message: str) -> None:
        self._diagnostic(message, None)

    def warn(self, message: str) -> None:
        self._diagnostic(f"Warning: {message}", "yellow")

    def error(self, message: str, hint: str | None = None) -> None:
        self._diagnostic(f"Error: {message}", "bold red")
        if hint:
            self._diagnostic(f"Hint: {hint}", "cyan")

    def _diagnostic(self, line: str, style: str | None) -> None:
        if not _wants_colour(sys.stderr):
            # Without colour Rich adds nothing here, and a failing command need not import it.
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            return
        self.err.print(line, markup=False, highlight=False, style=style)


def format_bytes(nbytes: int) -> str:
    """A size for people, in decimal units as disks and downloads count: ``2.6 GB``, ``512 kB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"
