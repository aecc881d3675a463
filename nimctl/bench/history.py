"""Every bench run as one JSON line in ``state_dir()/bench/history.jsonl``: append, list, find.

A line is the caller's record (host, GPUs, model, profile, engine arguments, versions, options and
results: whatever ``nimctl bench`` gathers) with ``id`` and ``time`` put first. Appending a line is
one ``write`` on a file opened for appending, so two runs at once do not interleave their lines; a
line that does not parse (a run killed while writing) is skipped when reading. The file is made
0600: it names hosts and engine arguments.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nimctl.errors import UsageError
from nimctl.runtime.paths import state_dir

_HINT = "see the runs with `nimctl bench history`"


def history_path() -> Path:
    return state_dir() / "bench" / "history.jsonl"


def new_run_id() -> str:
    """8 hex digits: short enough to type, and a prefix of them is enough when unique."""
    return secrets.token_hex(4)


def append_run(record: dict[str, Any], *, path: Path | None = None) -> dict[str, Any]:
    """Append ``record`` with a new ``id`` and the ``time`` (ISO 8601, UTC); returns the line written."""
    path = path or history_path()
    line = {"id": new_run_id(), "time": datetime.now(UTC).isoformat(timespec="seconds"), **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return line


def list_runs(*, path: Path | None = None) -> list[dict[str, Any]]:
    """Every run recorded, oldest first."""
    path = path or history_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    runs = []
    for line in text.splitlines():
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if isinstance(run, dict) and isinstance(run.get("id"), str):
            runs.append(run)
    return runs


def load_run(ref: str, *, path: Path | None = None) -> dict[str, Any]:
    """The run whose id is ``ref``, or starts with it when only one does."""
    runs = list_runs(path=path)
    ref = ref.strip().lower()
    exact = [run for run in runs if run["id"] == ref]
    if exact:
        return exact[-1]
    matches = [run for run in runs if ref and run["id"].startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"run id {ref!r} is ambiguous: it starts {', '.join(run['id'] for run in matches[-5:])}",
            hint="give more of the id",
        )
    if not runs:
        raise UsageError(f"unknown run id {ref!r}: no run is recorded yet", hint="run `nimctl bench` first")
    recent = ", ".join(run["id"] for run in reversed(runs[-5:]))
    raise UsageError(f"unknown run id {ref!r}; the latest runs: {recent}", hint=_HINT)
