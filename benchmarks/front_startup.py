"""How soon ``nim-serve`` answers ``/v1/health/live`` after it is started (target: within 1 s).

Starts the real server (``python -m nimctl.server``, what the ``nim-serve`` script runs)
several times with the built-in tiny model and a fresh cache, polls
``/v1/health/live`` every 5 ms from the moment the process is spawned, and prints the time to
the first 200 beside the target, with ``python -c pass`` in the same environment for scale.
Each server is stopped (SIGTERM) as soon as it is live: the model fetch and the engine that
follow are not what is measured.

    python benchmarks/front_startup.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

TARGET_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_live(timeout_s: float = 60.0) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as cache:
        # The GPUs are read as nim-serve reads them (NVML): that is part of its start-up.
        env = {**os.environ, "NIM_SERVER_PORT": str(port), "NIM_CACHE_PATH": cache}
        command = [sys.executable, "-m", "nimctl.server"]
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(timeout=1.0) as client:
                while time.perf_counter() - start < timeout_s:
                    if process.poll() is not None:
                        raise SystemExit(f"nim-serve exited with {process.returncode} before it was live")
                    try:
                        if client.get(f"http://127.0.0.1:{port}/v1/health/live").status_code == 200:
                            return time.perf_counter() - start
                    except httpx.TransportError:
                        pass
                    time.sleep(0.005)  # poll interval; the 200 itself ends the loop
            raise SystemExit(f"nim-serve was not live after {timeout_s:.0f} s")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def python_start() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    lives = [time_to_live() for _ in range(args.runs)]
    pythons = [python_start() for _ in range(args.runs)]
    live, python = statistics.median(lives), statistics.median(pythons)
    print(f"{args.runs} runs, medians; target: live within {TARGET_S:.1f} s of the spawn")
    print(f"{'what':32} {'seconds':>8} {'x target':>9}")
    print(f"{'python -c pass':32} {python:8.3f} {python / TARGET_S:9.2f}")
    verdict = "ok" if live <= TARGET_S else "MISS"
    print(f"{'nim-serve: first live 200':32} {live:8.3f} {live / TARGET_S:9.2f}  {verdict}")
    print(f"{'  (slowest run)':32} {max(lives):8.3f} {max(lives) / TARGET_S:9.2f}")


if __name__ == "__main__":
    main()
