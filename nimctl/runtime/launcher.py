"""The parent of a local instance's ``nim-serve``: it records how the server ended.

``python -m nimctl.runtime.launcher STATE_DIR -- COMMAND...`` runs COMMAND as its child and
writes the child's exit code to ``STATE_DIR/exit_code`` when it ends, so that ``nimctl ps``
can show how a detached instance exited. ``nimctl stop`` signals the launcher, which passes
the signal on and waits; whatever of the instance's process tree outlives it, or the stop's
timeout, is killed by ``nimctl stop`` (:mod:`nimctl.runtime.processes`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

EXIT_CODE_FILE = "exit_code"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m nimctl.runtime.launcher STATE_DIR -- COMMAND...\n")
        return 2
    state = Path(argv[0])
    command = argv[2:]
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    code = child.wait()
    # A signal death is reported the shell's way (128 + signal), as Docker does.
    code = 128 - code if code < 0 else code
    tmp = state / f".{EXIT_CODE_FILE}.{os.getpid()}"
    tmp.write_text(f"{code}\n", encoding="utf-8")
    tmp.replace(state / EXIT_CODE_FILE)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
