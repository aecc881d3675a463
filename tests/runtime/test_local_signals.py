"""A foreground `nimctl run --runtime local` and the signals that end it, with the stand-in server.

The CLI runs as a real process (signals go to it, as from a terminal or `kill`), with
tests/runtime/fake_nim_serve.py as its nim-serve. Whatever ends it (Ctrl-C, a second Ctrl-C
while it is stopping, SIGHUP from a closed terminal, SIGTERM), nothing it started may remain.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "fake_nim_serve.py"
# The CLI with the stand-in as its nim-serve; `main` reads the command line from sys.argv.
DRIVER = f"""
import sys
from nimctl.runtime import local_runtime
local_runtime._serve_command = lambda: [sys.executable, {str(FAKE)!r}]
from nimctl.cli.main import main
sys.argv[0] = "nimctl"
main()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cli:
    """The running CLI: its stderr lines as they come, and the processes of its instance."""

    def __init__(self, tmp_path: Path, mode: str, stop_delay: float) -> None:
        self.state = tmp_path / "state"
        env = {
            **os.environ,
            "NIMCTL_STATE_DIR": str(self.state),
            "NIMCTL_ASSUME_GPUS": "none",
            "NO_COLOR": "1",
            "DOCKER_HOST": "tcp://127.0.0.1:9",  # nothing listens: no Docker
            "PYTHONPATH": str(ROOT),
            "FAKE_NIM_STOP_DELAY": str(stop_delay),
        }
        argv = ["run", "--runtime", "local", "--name", "fg", "--port", str(_free_port())]
        argv += ["--cache", str(tmp_path / "cache"), "-e", f"FAKE_NIM_MODE={mode}", "--timeout", "90"]
        # FAKE_NIM_STOP_DELAY reaches the fake through the launcher's environment (the CLI's own).
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        assert self.process.stderr is not None and self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stderr, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stdout, False), daemon=True).start()

    def _read(self, stream: object, keep: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            if keep:
                self.err.append(line)
                self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=0.2):
                    return
            except queue.Empty:
                if self.process.poll() is not None:
                    break
        pytest.fail(f"never saw {text!r}; stderr: {''.join(self.err)}")

    def instance_processes(self) -> list[psutil.Process]:
        record = json.loads((self.state / "instances" / "fg" / "instance.json").read_text())
        launcher = psutil.Process(int(record["pid"]))
        return [launcher, *launcher.children(recursive=True)]

    def stop(self) -> None:
        """After a failed test too: the CLI, and what it started if it could not stop it itself."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        try:
            processes = self.instance_processes()
        except (OSError, ValueError, KeyError, psutil.Error):
            return  # no record left, or its launcher has gone
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    ("mode", "signals", "expected_code"),
    [
        # Ctrl-C once ready, then again while the stop is under way: the stop still completes.
        ("ok", [signal.SIGINT, signal.SIGINT], 0),
        ("ok", [signal.SIGHUP], 0),  # the terminal went away
        ("never-ready", [signal.SIGTERM], 128 + signal.SIGTERM),  # `kill` while the model loads
    ],
)
def test_signals_stop_and_remove_the_foreground_instance(
    mode: str, signals: list[signal.Signals], expected_code: int, tmp_path: Path
) -> None:
    # The fake takes this long to stop, so that a second signal surely lands while it stops.
    cli = Cli(tmp_path, mode, stop_delay=3.0 if len(signals) > 1 else 1.0)
    try:
        cli.wait_for("fg: ready at" if mode == "ok" else "fg: loading the model")
        processes = cli.instance_processes()
        assert len(processes) == 2, processes  # the launcher and the fake nim-serve
        cli.process.send_signal(signals[0])
        if len(signals) > 1:
            cli.wait_for("stopping fg")
            time.sleep(0.3)  # lets the stop begin; the fake's 3 s stop leaves a wide margin after it
            cli.process.send_signal(signals[1])
        code = cli.process.wait(timeout=90)
    finally:
        cli.stop()
    err = "".join(cli.err)
    assert code == expected_code, err
    if len(signals) > 1:
        assert "fg: still stopping, please wait" in err
    if mode == "ok":
        assert "fg: stopped and removed" in err
    assert [p.pid for p in processes if _alive(p)] == []
    assert not (cli.state / "instances" / "fg").exists()
