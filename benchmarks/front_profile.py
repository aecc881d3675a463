"""Where the front's CPU goes: py-spy samples of nim-serve's front under streamed chat load,
grouped by what the sampled code is doing.

Each sample is charged to one group, by its innermost frame that names one: a system call
(read, write, epoll, getpid: the kernel's share), the garbage collector, uvicorn's HTTP server,
the engine client, the metrics, the request checks, the key check, nimctl's handler, the event
loop, or "other" (the interpreter's own work between them). Needs py-spy (``pip install py-spy``)
and the right to trace the process (root, or ptrace_scope 0).

    python benchmarks/front_profile.py                      # the lean path, 16-token answers
    python benchmarks/front_profile.py --data-path framework --max-tokens 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import design_nim_serve
from front_overhead import run_round, served_model

# (group, what to look for in a frame), the innermost frame that matches decides; first match wins.
GROUPS = (
    ("system calls", ("(libc.so", "epoll", "getpid")),
    ("garbage collector", ("gc_collect",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("request checks (JSON parse + walk)", ("request_checks.py", "media_fetch.py", "json/")),
    ("key check", ("auth.py",)),
    ("engine client", ("engine_client.py", "aiohttp/")),
    ("uvicorn HTTP server", ("uvicorn/", "httptools")),
    ("nimctl handler", ("nimctl/server/",)),
    ("starlette/fastapi", ("starlette/", "fastapi/")),
    ("event loop (uvloop, asyncio)", ("loop.c", "asyncio/", "_asynciomodule")),
)


def group_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in GROUPS:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-path", default="lean", choices=("lean", "framework"))
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        sys.exit("py-spy not found: pip install py-spy")

    workdir = Path(tempfile.mkdtemp(prefix="nimctl-profile-"))
    deployment = design_nim_serve.start(
        "builtin://tiny-vlm", "profile-key", workdir, data_path=args.data_path
    )
    try:
        model = served_model(deployment)
        asyncio.run(run_round(deployment, "design", model, 4, 32, args.max_tokens))  # warm
        load = threading.Thread(
            target=lambda: asyncio.run(
                run_round(deployment, "design", model, 8, args.requests, args.max_tokens)
            )
        )
        load.start()
        raw = workdir / "samples.txt"
        command = [py_spy, "record", "--native", "-r", "250", "-d", str(args.seconds), "-f", "raw"]
        subprocess.run([*command, "-o", str(raw), "-p", str(deployment.front_pids[0])], check=True)
        load.join()
    finally:
        deployment.stop()

    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        if "clock_nanosleep" in frames[-1] or "pthread_cond" in frames[-1]:
            continue  # a thread asleep (the log filter's, the watchdog pipe's): not the front's work
        counts[group_of(frames)] += int(number)
    total = sum(counts.values())
    what = f"{args.data_path}, {args.max_tokens}-token streamed answers, concurrency 8"
    print(f"front ({what}): {total} busy samples")
    for name, count in counts.most_common():
        print(f"{100 * count / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
