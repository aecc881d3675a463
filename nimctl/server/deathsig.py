"""Children that die with the front: ``PR_SET_PDEATHSIG`` without ``preexec_fn``.

``preexec_fn`` runs Python code between fork and exec, which the Python docs call unsafe
once the parent has threads (the front has: uvicorn, aiohttp's resolver, to_thread). So a
child sets the signal itself, first thing: the fetch child calls :func:`die_with_parent`,
and the engine is started through ``python -m nimctl.server.deathsig PARENT_PID -- COMMAND``,
which sets it and then execs the engine (the setting survives exec; the pid stays the same).

The kernel sends the signal when the *thread* that forked the child ends. The front forks
its children from the event loop, which runs in the main thread, so that is the front's end.
It reaches the child only, not what the child spawned (vLLM's EngineCore): those are ended
by the watchdog (:mod:`nimctl.server.watchdog`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 125


def die_with_parent(parent_pid: int) -> None:
    """Ask for SIGKILL when the parent ends; exit now if it already has (it may, before this ran)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the group kill on stop still works
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(EXIT_PARENT_GONE)


def guarded(command: Sequence[str]) -> list[str]:
    """``command`` run so that it is killed when this process ends."""
    return [sys.executable, "-m", "nimctl.server.deathsig", str(os.getpid()), "--", *command]


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m nimctl.server.deathsig PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    die_with_parent(int(argv[0]))
    command = list(argv[2:])
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
