"""Host processes as ``/proc`` shows them: who a pid is, its descendants, and ending a whole tree.

A local instance is a tree: the launcher, ``nim-serve`` under it, and the vLLM engine, which
the front starts in a session of its own (so that it can signal the engine's group). Signalling
the launcher's process group therefore never reaches the engine; stopping an instance has to
know every process of the tree, which only ``/proc`` tells (psutil is not a dependency).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    return text.rsplit(")", 1)[1].split()


def has_proc() -> bool:
    return Path("/proc/self/stat").is_file()


def process_identity(pid: int) -> str | None:
    """What tells this process from a later one given the same pid: boot id and start time.

    A pid alone is not enough: after a reboot or once pids wrap, a recorded pid can belong
    to an unrelated process, which ``ps`` must not show and ``stop`` must not signal. None
    where there is no ``/proc`` (not Linux) or no such process.
    """
    fields = proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    boot_id = ""
    with contextlib.suppress(OSError):
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    # Field 22 of stat (the 20th after the name): start time in clock ticks since boot.
    return f"{boot_id}:{fields[19]}"


def pid_running(pid: int, identity: str | None) -> bool:
    """Whether ``pid`` is still the process recorded as ``identity`` and has not ended."""
    if not has_proc():  # no way to tell a reused pid here: whether it exists is all we know
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = proc_stat(pid)
    if fields is None or fields[0] == "Z":  # gone, or a zombie: ended for our purposes
        return False
    return identity is not None and process_identity(pid) == identity


@dataclass(frozen=True)
class Proc:
    pid: int
    identity: str | None
    group: int  # process group id


def _all_stats() -> dict[int, list[str]]:
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = fields
    return stats


def process_tree(pid: int) -> list[Proc]:
    """``pid`` and all its descendants, as they are now ([] without ``/proc``)."""
    if not has_proc():
        return []
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    found: list[Proc] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        if current not in stats or any(p.pid == current for p in found):
            continue
        found.append(Proc(current, process_identity(current), int(stats[current][2])))
        pending.extend(children.get(current, []))
    return found


def _survivors(tree: list[Proc]) -> list[int]:
    """What is left of ``tree``: its recorded processes still alive, and whatever else is
    now in one of its process groups (a worker an engine started after the tree was read).

    A group id cannot be given to a new process while the group has members, so a member
    found here came from the tree. This command's own group is never included.
    """
    alive = {p.pid for p in tree if pid_running(p.pid, p.identity)}
    groups = {p.group for p in tree} - {os.getpgrp()}
    if groups:
        for pid, fields in _all_stats().items():
            if fields[0] != "Z" and int(fields[2]) in groups:
                alive.add(pid)
    alive.discard(os.getpid())
    alive.discard(1)
    return sorted(alive)


def end_tree(tree: list[Proc], *, grace_s: float) -> None:
    """Wait up to ``grace_s`` for what is left of ``tree`` to end by itself, then SIGKILL it."""
    deadline = time.monotonic() + grace_s
    while _survivors(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _survivors(tree):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _survivors(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
