"""The byte progress bar of ``nimctl pull`` and ``nimctl bundle``: on stderr, only on a terminal.

Bytes done and total, rate, time left and, when files are counted, ``files 3/9``. In a pipe, with
``--format json`` or ``NO_COLOR`` nothing is drawn: the command's summary is all that appears.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from nimctl.output import Output


class TransferBar:
    """Use as a context manager; call :meth:`update` from any thread (Rich locks its own state)."""

    def __init__(self, out: Output, description: str, *, show_files: bool = True) -> None:
        self.out = out
        self.description = description
        self.show_files = show_files
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> TransferBar:
        if self.out.interactive and not self.out.is_json:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            ]
            if self.show_files:
                columns.append(TextColumn("files {task.fields[files]}"))
            self.progress = Progress(*columns, console=self.out.err, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=None, files="-")
        return self

    def update(
        self, done: int, total: int, files_done: int | None = None, files_total: int | None = None
    ) -> None:
        if self.progress is None or self.task is None:
            return
        files = f"{files_done}/{files_total}" if files_total is not None else "-"
        self.progress.update(self.task, completed=done, total=total or None, files=files)

    def stop(self) -> None:
        if self.progress is not None:
            progress, self.progress = self.progress, None
            progress.stop()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
