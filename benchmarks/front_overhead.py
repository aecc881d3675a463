"""What the front costs: the same chat requests straight to the engine and through the front.

Rounds alternate between the two paths in one run (so drift in the machine's load hits
both alike), at concurrency 1, 8 and 32. Every request streams, so each one gives its
time to first token (TTFT) and its end-to-end latency; requests/s is per round.

By default the server starts with a random NIMCTL_API_KEY and the front's requests carry it
("front+key"): the key check (nimctl/server/auth.py) and the limits middleware (always on,
nimctl/server/limits.py) both run. --no-key starts it without a key ("front": limits only).
--compare-key runs both servers one after the other and prints what the key check adds.
Beside the latencies goes the front process's own CPU per request (utime+stime from
/proc/PID/stat over that path's rounds; the engine is another process and not counted); on the
"direct" rows it is the front's idle background, the floor to read the others against.

    python benchmarks/front_overhead.py                  # starts nim-serve with builtin://tiny-vlm
    python benchmarks/front_overhead.py --compare-key --concurrency 1,8 --rounds 4
    python benchmarks/front_overhead.py --front http://127.0.0.1:8000 --engine http://127.0.0.1:PORT \
        [--api-key KEY] [--front-pid PID]

Targets: p50 latency and TTFT ratios (front/direct) <= 1.05, throughput ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _nim_serve import free_port, start_nim_serve  # the benchmarks' folder is on sys.path

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    wall: float = 0.0
    requests: int = 0
    front_cpu: float | None = None  # seconds of the front process's CPU over these rounds

    def add(self, other: Samples) -> None:
        self.latencies += other.latencies
        self.ttfts += other.ttfts
        self.wall += other.wall
        self.requests += other.requests
        if other.front_cpu is not None:
            self.front_cpu = (self.front_cpu or 0.0) + other.front_cpu

    @property
    def rps(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.front_cpu is None or not self.requests:
            return None
        return self.front_cpu * 1e3 / self.requests


@dataclass
class Target:
    """One server's two URLs, the key its front wants (None: open) and its process id."""

    front: str
    engine: str
    key: str | None
    pid: int | None

    @property
    def label(self) -> str:
        return "front+key" if self.key else "front"

    def headers(self, path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key and path != "direct" else {}


def process_cpu(pid: int | None) -> float | None:
    """utime + stime of one process (not its children), in seconds; None when unreadable."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces; fields from 3 on
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # fields 14 and 15 of proc(5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_request(client: httpx.AsyncClient, url: str, payload: dict[str, object], out: Samples) -> None:
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url + "/v1/chat/completions", json=payload) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: ") and '"content"' in line:
                first = time.perf_counter()
    end = time.perf_counter()
    out.latencies.append(end - started)
    out.ttfts.append((first or end) - started)


async def run_round(
    url: str, model: str, concurrency: int, requests: int, max_tokens: int, headers: dict[str, str]
) -> Samples:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "Describe a quiet morning in a small town."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    samples = Samples(requests=requests)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits, headers=headers) as client:
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                queue.pop()
                await one_request(client, url, payload, samples)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        samples.wall = time.perf_counter() - started
    return samples




def start_server(model: str, key: str | None) -> tuple[subprocess.Popen[bytes], Target]:
    front, engine = free_port(), free_port()
    cache = os.environ.get("NIM_CACHE_PATH") or tempfile.mkdtemp(prefix="nimctl-bench-")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("NIMCTL_API_KEY", "NIMCTL_API_KEY_FILE")},
        "NIM_MODEL_PATH": model,
        "NIM_SERVER_PORT": str(front),
        "NIMCTL_ENGINE_PORT": str(engine),
        "NIM_CACHE_PATH": cache,
        "NIM_LOG_LEVEL": "WARNING",
    }
    if key:
        env["NIMCTL_API_KEY"] = key
    log = Path(cache) / "bench-server.log"
    process = start_nim_serve(env, log, front)
    return process, Target(f"http://127.0.0.1:{front}", f"http://127.0.0.1:{engine}", key, process.pid)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


def bench(target: Target, args: argparse.Namespace) -> dict[int, dict[str, Samples]]:
    """Check that the front wants the key it was given (or none), warm both paths, measure."""
    models = httpx.get(target.front + "/v1/models", headers=target.headers("front"), timeout=30)
    models.raise_for_status()
    model = models.json()["data"][0]["id"]
    if target.key:
        bare = httpx.get(target.front + "/v1/models", timeout=30).status_code
        if bare != 401:
            sys.exit(f"the front answered {bare}, not 401, without the key: is the key check on?")
    for path, url in (("front", target.front), ("direct", target.engine)):
        asyncio.run(run_round(url, model, 2, 4, args.max_tokens, target.headers(path)))
    return measure(target, model, args)


def measure(target: Target, model: str, args: argparse.Namespace) -> dict[int, dict[str, Samples]]:
    results: dict[int, dict[str, Samples]] = {}
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        requests = args.requests or max(64, 8 * concurrency)
        totals = {"direct": Samples(), target.label: Samples()}
        for round_index in range(args.rounds):
            order = list(totals) if round_index % 2 == 0 else list(reversed(totals))
            for path in order:
                url = target.engine if path == "direct" else target.front
                cpu_before = process_cpu(target.pid)
                samples = asyncio.run(
                    run_round(url, model, concurrency, requests, args.max_tokens, target.headers(path))
                )
                cpu_after = process_cpu(target.pid)
                if cpu_before is not None and cpu_after is not None:
                    samples.front_cpu = cpu_after - cpu_before
                totals[path].add(samples)
        results[concurrency] = totals
        print(f"{target.label}: concurrency {concurrency} done", file=sys.stderr)
    return results


Figures = dict[int, dict[str, Any]]  # concurrency -> path (and "ratio") -> figure -> value
METRICS = ("p50", "p99", "ttft_p50", "rps")


def report(results: dict[int, dict[str, Samples]]) -> Figures:
    print(
        f"{'conc':>4} {'path':>9} {'p50 ms':>8} {'p99 ms':>8} {'TTFT p50':>9} {'req/s':>7} "
        f"{'front CPU ms/req':>17}"
    )
    figures: Figures = {}
    for concurrency, paths in results.items():
        row: dict[str, dict[str, Any]] = {}
        for path, samples in paths.items():
            r = {
                "p50": statistics.median(samples.latencies),
                "p99": percentile(samples.latencies, 0.99),
                "ttft_p50": statistics.median(samples.ttfts),
                "rps": samples.rps,
            }
            cpu_ms = samples.cpu_ms_per_request
            row[path] = {**r, "cpu_ms": cpu_ms}
            cpu = "-" if cpu_ms is None else f"{cpu_ms:.2f}"
            print(
                f"{concurrency:>4} {path:>9} {r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} "
                f"{r['ttft_p50'] * 1e3:>9.1f} {r['rps']:>7.2f} {cpu:>17}"
            )
        front = next(path for path in row if path != "direct")
        ratio: dict[str, float] = {key: row[front][key] / row["direct"][key] for key in METRICS}
        ok = ratio["p50"] <= 1.05 and ratio["ttft_p50"] <= 1.05 and ratio["rps"] >= 0.95
        print(
            f"{concurrency:>4} {'ratio':>9} {ratio['p50']:>8.3f} {ratio['p99']:>8.3f} "
            f"{ratio['ttft_p50']:>9.3f} {ratio['rps']:>7.3f}  {'ok' if ok else 'MISS'}"
        )
        figures[concurrency] = {**row, "ratio": ratio}
    return figures


def compare(open_figures: Figures, keyed_figures: Figures) -> None:
    """What the key check adds: keyed run minus open run (the limits middleware runs in both)."""
    for concurrency in (c for c in open_figures if c in keyed_figures):
        plain, keyed = open_figures[concurrency], keyed_figures[concurrency]
        cpu_plain, cpu_keyed = plain["front"]["cpu_ms"], keyed["front+key"]["cpu_ms"]
        cpu = "n/a" if cpu_plain is None or cpu_keyed is None else f"{cpu_keyed - cpu_plain:+.3f} ms"
        changes = ", ".join(
            f"{name} {plain['ratio'][key]:.3f} -> {keyed['ratio'][key]:.3f}"
            for name, key in (("p50", "p50"), ("TTFT p50", "ttft_p50"), ("req/s", "rps"))
        )
        print(
            f"conc {concurrency}: auth (key check; limits on in both runs): {cpu} CPU per request (front), "
            f"ratio changes {changes}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--front", help="URL of a running front (with --engine)")
    parser.add_argument("--engine", help="URL of its engine (the loopback port nim-serve started vLLM on)")
    parser.add_argument("--api-key", help="key of a running front (default: $NIMCTL_API_KEY)")
    parser.add_argument("--front-pid", type=int, help="process id of a running front, for its CPU figures")
    parser.add_argument("--model-path", default="builtin://tiny-vlm", help="model when starting a server")
    parser.add_argument("--no-key", action="store_true", help="start the server without an API key")
    parser.add_argument(
        "--compare-key", action="store_true", help="run an open server, then a keyed one, and compare"
    )
    parser.add_argument("--concurrency", default="1,8,32")
    # Short rounds are at the mercy of one stall of a 2-core machine: a round lasts seconds.
    parser.add_argument("--rounds", type=int, default=6, help="rounds per path and concurrency")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per round (default 8 x concurrency, at least 64)"
    )
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if args.rounds < 1 or any(int(c) < 1 for c in args.concurrency.split(",")):
        parser.error("--rounds and every --concurrency must be at least 1")

    if args.front and args.engine:
        if args.compare_key:
            parser.error("--compare-key starts its own servers: leave out --front and --engine")
        key = None if args.no_key else (args.api_key or os.environ.get("NIMCTL_API_KEY") or None)
        target = Target(args.front.rstrip("/"), args.engine.rstrip("/"), key, args.front_pid)
        figures = {target.label: report(bench(target, args))}
    else:
        keys = (
            [None, secrets.token_urlsafe(32)]
            if args.compare_key
            else [None if args.no_key else secrets.token_urlsafe(32)]
        )
        figures = {}
        for key in keys:
            server, target = start_server(args.model_path, key)
            try:
                results = bench(target, args)
            finally:
                stop_server(server)
            print(f"\n{target.label} (server {'with' if key else 'without'} NIMCTL_API_KEY)")
            figures[target.label] = report(results)
        if args.compare_key:
            print()
            compare(figures["front"], figures["front+key"])
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
