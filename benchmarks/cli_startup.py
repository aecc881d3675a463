"""How long the CLI takes to start, against the interpreter's own start-up.

Times ``nimctl --help``, ``nimctl health`` and ``nimctl tokenize`` (several runs each,
median wall time) and ``python -c pass`` in the same environment, and prints the ratios
(target: <= 2x). Two reference rows show the floor under any Python CLI of this design:
importing the stdlib's HTTP client, and importing Typer and httpx (the libraries the CLI is
built on) without running anything. ``nimctl health (no URL)`` adds the default target's
lookup of running instances. ``--importtime`` also lists the packages that take the most
import time on each command's path, from ``python -X importtime``.

``nimctl ps (3 running)`` is ``nimctl ps`` with three real instances running (target: under
0.5 s): the built-in tiny-vlm started with ``nimctl run --runtime local`` (nim-serve and a vLLM
CPU engine each) in a state folder of the benchmark's own, stopped again at the end. ps asks
each one's readiness and /v1/metrics in parallel. ``--ps-instances 0`` leaves the row out
(starting the engines takes a few minutes on a small machine); ``--ps-state-dir DIR`` times ps
on the instances already running in that state folder instead (to measure again without
starting them again).

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
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PS_TARGET_S = 0.5


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_instances(count: int, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``count`` tiny-vlm instances started with ``nimctl run --runtime local`` (all at once: each
    `run -d` returns when its instance is ready), in a state folder of their own; the environment
    that sees them. Stopped, whatever happens."""
    nimctl = nimctl_command()
    with tempfile.TemporaryDirectory(prefix="nimctl-bench-ps-") as folder:
        state = Path(folder)
        run_env = {
            **env,
            "NIMCTL_STATE_DIR": str(state / "state"),
            "NIMCTL_ASSUME_GPUS": "none",
            "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        }
        names = [f"bench-ps-{n}" for n in range(count)]
        try:
            where = ["--cache", str(state / "cache"), "--timeout", "1200"]
            starts = [
                subprocess.Popen(
                    [
                        *nimctl,
                        "run",
                        "tiny-vlm",
                        "-d",
                        "--runtime",
                        "local",
                        "--name",
                        name,
                        "--port",
                        str(free_port()),
                        *where,
                    ],
                    env=run_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for name in names
            ]
            for name, start in zip(names, starts, strict=True):
                _, err = start.communicate()
                if start.returncode != 0:
                    raise SystemExit(f"{name} did not start (exit {start.returncode}):\n{err}")
            yield run_env
        finally:
            for name in names:
                subprocess.run([*nimctl, "stop", name], env=run_env, capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="runs per command (median is reported)")
    parser.add_argument("--url", help="a running server (default: a closed port)")
    parser.add_argument("--importtime", action="store_true", help="also list the slowest imports per command")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument(
        "--ps-instances", type=int, default=3, help="instances running for the ps row (0: no ps row)"
    )
    parser.add_argument(
        "--ps-state-dir", help="time ps on the instances already running in this NIMCTL_STATE_DIR instead"
    )
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
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    ps_row = f"nimctl ps ({options.ps_instances} running)"

    def time_ps(ps_env: dict[str, str]) -> None:
        argv = [*nimctl, "ps"]
        listed = subprocess.run(argv, env=ps_env, capture_output=True, text=True, check=False)
        print(listed.stdout, end="")
        time_runs(argv, 1, ps_env)
        walls, cpus = time_runs(argv, options.runs, ps_env)
        wall[ps_row], cpu[ps_row] = statistics.median(walls), statistics.median(cpus)

    if options.ps_state_dir:
        ps_row = "nimctl ps (--ps-state-dir)"
        time_ps({**env, "NIMCTL_STATE_DIR": options.ps_state_dir})
    elif options.ps_instances > 0:
        with running_instances(options.ps_instances, env) as ps_env:
            time_ps(ps_env)
    # One warm-up each so that every case reads .pyc files from a warm page cache.
    for argv, case_env in cases.values():
        time_runs(argv, 1, case_env)
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
    if ps_row in wall:
        verdict = f"{'ok' if wall[ps_row] < PS_TARGET_S else 'MISS'} (< {PS_TARGET_S * 1000:.0f} ms)"
        print(
            f"{ps_row:<24} {wall[ps_row] * 1000:>9.1f} {wall[ps_row] / base_wall:>9.2f}"
            f" {cpu[ps_row] * 1000:>9.1f} {cpu[ps_row] / base_cpu:>9.2f}  {verdict}"
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
