"""How long the CLI takes to start, against the interpreter's own start-up.

Times ``nimctl --help``, ``nimctl health`` and ``nimctl tokenize`` (several runs each,
median wall time) and ``python -c pass`` in the same environment, and prints the ratios
(target: <= 2x). Two reference rows show the floor under any Python CLI of this design:
importing the stdlib's HTTP client, and importing Typer and httpx (the libraries the CLI is
built on) without running anything. ``nimctl health (no URL)`` adds the default target's
lookup of running instances. ``--importtime`` also lists the packages that take the most
import time on each command's path, from ``python -X importtime``.

    python benchmarks/cli_startup.py                      # against a closed port: pure start-up
    python benchmarks/cli_startup.py --url http://127.0.0.1:8000 --importtime

Without ``--url`` the client commands talk to a port where nothing listens: they start,
fail to connect at once (exit 3) and stop, which is start-up cost plus one refused connect.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # the socket is closed again: nothing listens there


def nimctl_command() -> list[str]:
    script = Path(sys.executable).with_name("nimctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nimctl"]


def time_runs(argv: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run.

    CPU time is reported too because on a shared, busy machine the wall time mostly measures
    the wait for a core; the CPU time is what the command itself costs.
    """
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return walls, cpus


def import_culprits(args: list[str], env: dict[str, str], top: int) -> list[tuple[str, float]]:
    """Import time (ms) per top-level package on this command's path: each module's own time,
    added up by the package it belongs to (``nimctl.client.http`` counts for nimctl, the
    httpx it imports for httpx)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nimctl", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    per_package: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        self_us, _, name = line[len("import time:") :].split("|")
        try:
            per_package[name.strip().split(".")[0]] += int(self_us) / 1000
        except ValueError:
            continue  # the header line
    return sorted(per_package.items(), key=lambda item: -item[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="runs per command (median is reported)")
    parser.add_argument("--url", help="a running server (default: a closed port)")
    parser.add_argument("--importtime", action="store_true", help="also list the slowest imports per command")
    parser.add_argument("--top", type=int, default=8)
    options = parser.parse_args()

    url = options.url or closed_port_url()
    env = {**os.environ, "NO_COLOR": "1", "NIMCTL_URL": url}
    no_url_env = {key: value for key, value in env.items() if key != "NIMCTL_URL"}
    nimctl = nimctl_command()
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "floor: http.client": ([sys.executable, "-c", "import http.client, json"], env),
        "floor: typer+httpx": ([sys.executable, "-c", "import typer, nimctl._httpx"], env),
        "nimctl --help": ([*nimctl, "--help"], env),
        "nimctl health": ([*nimctl, "health"], env),
        "nimctl tokenize": ([*nimctl, "tokenize", "hello world"], env),
        "nimctl health (no URL)": ([*nimctl, "health"], no_url_env),
    }
    # One warm-up each so that every case reads .pyc files from a warm page cache.
    for argv, case_env in cases.values():
        time_runs(argv, 1, case_env)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for name, (argv, case_env) in cases.items():
        walls, cpus = time_runs(argv, options.runs, case_env)
        wall[name], cpu[name] = statistics.median(walls), statistics.median(cpus)
    base_wall, base_cpu = wall["python -c pass"], cpu["python -c pass"]
    where = url if options.url else f"{url} (closed port)"
    print(f"{options.runs} runs each, medians; server: {where}; target: nimctl rows <= 2x python")
    print(f"{'command':<24} {'wall ms':>9} {'x python':>9} {'cpu ms':>9} {'x python':>9}  target")
    for name in cases:
        verdict = ("ok" if wall[name] <= 2 * base_wall else "MISS") if name.startswith("nimctl") else ""
        print(
            f"{name:<24} {wall[name] * 1000:>9.1f} {wall[name] / base_wall:>9.2f}"
            f" {cpu[name] * 1000:>9.1f} {cpu[name] / base_cpu:>9.2f}  {verdict}"
        )
    if options.importtime:
        for name, (argv, case_env) in cases.items():
            if name.startswith("nimctl"):
                culprits = import_culprits(argv[len(nimctl) :], case_env, options.top)
                print(f"\n{name}: import time by top-level package, ms (the modules' own times added up)")
                for package, ms in culprits:
                    print(f"  {package:<28} {ms:8.1f}")


if __name__ == "__main__":
    main()
