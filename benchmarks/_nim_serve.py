"""Starting ``nim-serve`` for a benchmark and waiting until it is ready (shared by the scripts here)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

READY_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_nim_serve(env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    """``nim-serve`` with ``env``, its output in ``log``, ready on ``port``; exits the script if not."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nimctl", "serve"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"nim-serve exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url + "/v1/health/ready", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    process.wait(30)
    sys.exit(f"server not ready after {READY_TIMEOUT_S:.0f} s; see {log}")


def stop(process: psutil.Process) -> None:
    """SIGTERM to nim-serve (it stops its engine), then SIGKILL to whatever of its tree is left."""
    try:
        tree = [process, *process.children(recursive=True)]
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        pass
    for leftover in tree:
        try:
            leftover.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(tree, timeout=30)
