"""Nothing the front started outlives it: a watchdog that ends the front's children when it ends.

``PR_SET_PDEATHSIG`` (:mod:`nimctl.server.deathsig`) reaches only the process the front forked.
vLLM's own processes (EngineCore, multiprocessing's resource tracker, its model-inspection
subprocess) are handed to PID 1 when the engine dies and run on, holding gigabytes and ports.
So the front starts one watchdog, ``python -m nimctl.server.watchdog``, in a session of its own
(a Ctrl-C or a group kill aimed at the front does not reach it), the first time it starts a
child. The watchdog holds the read end of a pipe whose write end only the front holds (it is
close-on-exec, so no child inherits it). The front writes one line per child it starts
(``watch PID``, the child leading its own process group and session) and one when it is done
with it (``end PID``). The watchdog then kills, with SIGKILL:

* on ``end PID``: what is left of that child's tree, then forgets it;
* at end of file, which comes however the front ended (SIGKILL included): every watched tree,
  then exits.

A tree is the child's process group and session, plus every descendant the watchdog saw
while it scanned ``/proc`` (one that left the group and the session, as some of vLLM's
launchers do, is still found by its ancestry). A tree grows mostly as it starts, so the scans
come :data:`SCAN_FIRST_S` after a ``watch``, then at doubling intervals up to
:data:`SCAN_MAX_S`: a descendant born ``t`` seconds after its child started is known by
``2 t + SCAN_FIRST_S``, and a scan (tens of ms where ``/proc`` is slow) costs little.

The front side imports only the standard library and costs a fork-exec, done off the path to
``/v1/health/live``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("nimctl.server")

SCAN_FIRST_S = 1.0
SCAN_MAX_S = 60.0
# Passes of scan-and-kill at the end: a process forking while it is killed can leave a child.
KILL_PASSES = 10
KILL_PASS_PAUSE_S = 0.05


# --- In the front ------------------------------------------------------------------------------


class Watchdog:
    """The front's handle on its watchdog process; started on the first :meth:`watch`."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None
        self._watched: set[int] = set()
        os.register_at_fork(after_in_child=self._forget_in_fork)

    def watch(self, pid: int) -> None:
        """Have the tree of ``pid`` (a child leading its own group and session) killed when the front ends."""
        self._watched.add(pid)
        self._send(f"watch {pid}\n")

    def end(self, pid: int) -> None:
        """Kill what is left of ``pid``'s tree now (the front is done with it) and stop watching it."""
        if pid in self._watched:
            self._watched.discard(pid)
            self._send(f"end {pid}\n")

    def _send(self, line: str) -> None:
        # Never fatal: without a watchdog the front still serves, and deathsig still ends the top child.
        for _attempt in range(2):
            try:
                if self._pipe is None:
                    self._start()
                    # A new watchdog learns what the old one watched; ``line`` may be among them.
                    line = "".join(f"watch {pid}\n" for pid in sorted(self._watched)) + line
                assert self._pipe is not None
                os.write(self._pipe, line.encode())  # short lines: each write is atomic
                return
            except OSError as exc:  # it died (killed by hand, out of memory), or could not start
                log.warning("watchdog process: %s; starting another", exc.strerror or exc)
                self._close()

    def _start(self) -> None:
        read_end, self._pipe = os.pipe()  # both close-on-exec: the watchdog gets read_end as stdin only
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "nimctl.server.watchdog"],
                stdin=read_end,
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        log.debug("watchdog started (pid %s)", self._process.pid)

    def _close(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self._pipe)
        self._pipe = None
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(0)  # reap it if it has gone
        self._process = None

    def _forget_in_fork(self) -> None:
        """A forked copy of the front must neither hold the pipe open (its end would come late) nor write."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self._pipe)
        self._pipe, self._process, self._watched = None, None, set()


_watchdog = Watchdog()
watch = _watchdog.watch
end = _watchdog.end


# --- In the watchdog process -------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    group: int
    session: int
    started: int  # clock ticks after boot: with the pid, who it is (pids are reused)
    zombie: bool


def _processes() -> dict[int, _Proc]:
    found: dict[int, _Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                text = stat.read().decode(errors="replace")
        except OSError:
            continue  # ended while this ran
        fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        found[int(name)] = _Proc(
            int(name), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), fields[0] in "ZX"
        )
    return found


@dataclass
class _Tree:
    """One watched child: its pid leads a group and a session; ``seen`` are descendants met so far."""

    leader: int
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time

    def record(self, processes: dict[int, _Proc], children: dict[int, list[int]]) -> None:
        self.seen = {pid: started for pid, started in self.seen.items() if _same(processes, pid, started)}
        pending = [self.leader, *self.seen]
        while pending:
            for child in children.get(pending.pop(), ()):
                if child not in self.seen:
                    self.seen[child] = processes[child].started
                    pending.append(child)

    def members(self, processes: dict[int, _Proc], children: dict[int, list[int]]) -> set[int]:
        self.record(processes, children)
        members = {
            p.pid for p in processes.values() if self.leader in (p.group, p.session) or p.pid in self.seen
        }
        return {pid for pid in members if not processes[pid].zombie} - {os.getpid()}


def _same(processes: dict[int, _Proc], pid: int, started: int) -> bool:
    return pid in processes and processes[pid].started == started


def _children(processes: dict[int, _Proc]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for process in processes.values():
        children.setdefault(process.ppid, []).append(process.pid)
    return children


def _kill(trees: list[_Tree]) -> None:
    """SIGKILL every member of ``trees``, again until none is left (bounded)."""
    for _ in range(KILL_PASSES):
        processes = _processes()
        children = _children(processes)
        members = set().union(*(tree.members(processes, children) for tree in trees)) if trees else set()
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(KILL_PASS_PAUSE_S)


def _handle(line: str, trees: dict[int, _Tree]) -> bool:
    """Act on one line from the front; whether it was a new child to watch."""
    verb, _, pid_text = line.partition(" ")
    if not pid_text.strip().isdigit():
        return False
    pid = int(pid_text)
    if verb == "watch" and pid not in trees:
        trees[pid] = _Tree(pid)
        return True
    if verb == "end" and pid in trees:
        _kill([trees.pop(pid)])
    return False


def main() -> int:
    # Signals meant for the front's terminal or group are not for this process: it ends at end of file.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    stdin = sys.stdin.fileno()
    trees: dict[int, _Tree] = {}
    pending = b""
    delay = SCAN_FIRST_S
    next_scan = time.monotonic() + delay
    while True:
        timeout = max(0.0, next_scan - time.monotonic()) if trees else None
        readable, _, _ = select.select([stdin], [], [], timeout)
        if readable:
            chunk = os.read(stdin, 4096)
            if not chunk:
                break  # the front has ended, however it ended
            *lines, pending = (pending + chunk).split(b"\n")
            new_trees = [_handle(line.decode(errors="replace"), trees) for line in lines]  # all of them
            if any(new_trees):
                delay = SCAN_FIRST_S  # a new tree: it grows now
                next_scan = time.monotonic() + delay
        elif trees:
            processes = _processes()
            children = _children(processes)
            for tree in trees.values():
                tree.record(processes, children)
            delay = min(delay * 2, SCAN_MAX_S)
            next_scan = time.monotonic() + delay
    _kill(list(trees.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
