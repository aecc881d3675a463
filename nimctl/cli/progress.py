"""How the container lifecycle commands show progress: the build and readiness views.

``nimctl build`` and ``nimctl run`` share them (and ``ps`` its durations). A view is a
listener for the library's events: on a terminal it draws one live line (spinner, step or
phase, elapsed time, latest log line) above the finished steps; elsewhere it prints one
plain line per finished step or phase change. The commands themselves register from
:mod:`nimctl.cli.main`, so this module imports none of them.
"""

from __future__ import annotations

import contextlib
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.live import Live

    from nimctl.output import Output
    from nimctl.runtime.images import BuildEvent, BuildStep
    from nimctl.runtime.readiness import ReadinessEvent

_PHASE_LABELS = {"starting": "starting", "loading": "loading the model", "ready": "ready"}
# In a pipe, a download's progress is printed at most this often, so that logs stay short.
PROGRESS_PRINT_EVERY_S = 5.0


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


class _LiveLine:
    """A Rich renderable whose elapsed time ticks even while no event arrives."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.text = ""

    def __rich__(self) -> Any:
        from rich.spinner import Spinner

        elapsed = format_duration(time.monotonic() - self.started)
        return Spinner("dots", f"{self.text}  [{elapsed}]", style="cyan")


class _View:
    def __init__(self, out: Output) -> None:
        self.out = out
        self.line = _LiveLine()
        self.live: Live | None = None

    def __enter__(self) -> _View:
        if self.out.interactive and not self.out.is_json:
            from rich.live import Live

            self.live = Live(self.line, console=self.out.err, refresh_per_second=8, transient=True)
            self.live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            live, self.live = self.live, None
            # After a SIGHUP the terminal is gone: the last redraw must not replace the
            # interruption that is unwinding through here (the instance still has to stop).
            with contextlib.suppress(OSError):
                live.stop()

    def print(self, message: str, style: str | None = None) -> None:
        console = self.live.console if self.live is not None else self.out.err
        console.print(message, markup=False, highlight=False, style=style)

    def print_tail(self, title: str, lines: list[str]) -> None:
        if lines:
            self.print(title, style="bold")
            for line in lines:
                self.print(f"  | {line}", style="dim")


class BuildView(_View):
    """Renders :class:`nimctl.runtime.images.BuildEvent`: one line per finished step."""

    def __init__(self, out: Output) -> None:
        super().__init__(out)
        self.current: BuildStep | None = None
        self.step_started = 0.0

    def __call__(self, event: BuildEvent) -> None:
        if event.kind == "phase":
            self._finish_step()
            self.print(event.message)
        elif event.kind == "step" and event.step is not None:
            self._finish_step()
            self.current, self.step_started = event.step, time.monotonic()
            self.line.text = self._label(event.step)
        elif event.kind == "output" and self.current is not None:
            self.line.text = f"{self._label(self.current)}  {event.message.strip()[:60]}"
        elif event.kind == "done":
            self._finish_step()
        elif event.kind == "failed":
            self.current = None
            self.print_tail("Last lines of the build log:", event.message.splitlines())

    @staticmethod
    def _label(step: BuildStep) -> str:
        return f"{step.phase} {step.number}/{step.total} {' '.join(step.instruction.split())[:70]}"

    def _finish_step(self) -> None:
        step, self.current = self.current, None
        if step is None:
            return
        took = "cached" if step.cached else format_duration(time.monotonic() - self.step_started)
        self.print(f"  {self._label(step)}  ({took})", style="dim")


class ReadinessView(_View):
    """Renders :class:`nimctl.runtime.readiness.ReadinessEvent`: phase, elapsed, latest log line.

    While the server downloads the model files, the phase is its progress
    (``downloading 45 %, 1.2 of 2.6 GB, 3 of 9 files``).
    """

    def __init__(self, out: Output, name: str) -> None:
        super().__init__(out)
        self.name = name
        self.phase = ""
        self.progress_printed = ""
        self.progress_printed_at = float("-inf")

    def __call__(self, event: ReadinessEvent) -> None:
        if event.phase == "failed":
            self.print_tail(f"Last log lines of {self.name}:", event.log_tail)
            return
        if event.phase != self.phase:
            self.phase = event.phase
            if self.live is None or event.phase == "ready":
                label = _PHASE_LABELS[event.phase]
                self.print(f"{self.name}: {label} ({format_duration(event.elapsed)})")
        status = _PHASE_LABELS.get(event.phase, event.phase)
        if event.progress is not None:
            status = event.progress.describe()
            if self.live is None:
                self._print_progress(status, event.elapsed)
        last = " ".join(event.last_line.split())[:90]
        self.line.text = f"{self.name}: {status}  {last}"

    def _print_progress(self, status: str, elapsed: float) -> None:
        now = time.monotonic()
        if status != self.progress_printed and now - self.progress_printed_at >= PROGRESS_PRINT_EVERY_S:
            self.progress_printed, self.progress_printed_at = status, now
            self.print(f"{self.name}: {status} ({format_duration(elapsed)})")
