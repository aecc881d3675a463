"""What the front costs: the same chat requests straight to the engine and through the front.

Rounds alternate between the two paths in one run (so drift in the machine's load hits
both alike), at concurrency 1, 8 and 32. Every request streams, so each one gives its
time to first token (TTFT) and its end-to-end latency; requests/s is per round.

    python benchmarks/front_overhead.py                  # starts nim-serve with builtin://tiny-vlm
    python benchmarks/front_overhead.py --front http://127.0.0.1:8000 --engine http://127.0.0.1:PORT

Targets: p50 latency and TTFT ratios (front/direct) <= 1.05, throughput ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    wall: float = 0.0
    requests: int = 0

    def add(self, other: Samples) -> None:
        self.latencies += other.latencies
        self.ttfts += other.ttfts
        self.wall += other.wall
        self.requests += other.requests

    @property
    def rps(self) -> float:
        return self.requests / self.wall if self.wall else 0.0


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


async def run_round(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> Samples:
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
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                queue.pop()
                await one_request(client, url, payload, samples)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        samples.wall = time.perf_counter() - started
    return samples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: str) -> tuple[subprocess.Popen[bytes], str, str]:
    front, engine = free_port(), free_port()
    cache = os.environ.get("NIM_CACHE_PATH") or tempfile.mkdtemp(prefix="nimctl-bench-")
    env = {
        **os.environ,
        "NIM_MODEL_PATH": model,
        "NIM_SERVER_PORT": str(front),
        "NIMCTL_ENGINE_PORT": str(engine),
        "NIM_CACHE_PATH": cache,
        "NIM_LOG_LEVEL": "WARNING",
    }
    log = Path(cache) / "bench-server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "nimctl", "serve"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{front}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"nim-serve exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url + "/v1/health/ready", timeout=5).status_code == 200:
                return process, url, f"http://127.0.0.1:{engine}"
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    sys.exit("server not ready after 600 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--front", help="URL of a running front (with --engine)")
    parser.add_argument("--engine", help="URL of its engine (the loopback port nim-serve started vLLM on)")
    parser.add_argument("--model-path", default="builtin://tiny-vlm", help="model when starting a server")
    parser.add_argument("--concurrency", default="1,8,32")
    # Short rounds are at the mercy of one stall of a 2-core machine: a round lasts seconds.
    parser.add_argument("--rounds", type=int, default=6, help="rounds per path and concurrency")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per round (default 8 x concurrency, at least 64)"
    )
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    server = None
    if args.front and args.engine:
        front, engine = args.front.rstrip("/"), args.engine.rstrip("/")
    else:
        server, front, engine = start_server(args.model_path)
    try:
        model = httpx.get(front + "/v1/models", timeout=30).json()["data"][0]["id"]
        asyncio.run(run_round(front, model, 2, 4, args.max_tokens))  # warm both paths' connections
        asyncio.run(run_round(engine, model, 2, 4, args.max_tokens))
        results = measure(front, engine, model, args)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    report(results, args.json)


def measure(front: str, engine: str, model: str, args: argparse.Namespace) -> dict[int, dict[str, Samples]]:
    results: dict[int, dict[str, Samples]] = {}
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        requests = args.requests or max(64, 8 * concurrency)
        totals = {"direct": Samples(), "front": Samples()}
        for round_index in range(args.rounds):
            order = ["direct", "front"] if round_index % 2 == 0 else ["front", "direct"]
            for path in order:
                url = engine if path == "direct" else front
                totals[path].add(asyncio.run(run_round(url, model, concurrency, requests, args.max_tokens)))
        results[concurrency] = totals
        print(f"concurrency {concurrency}: done", file=sys.stderr)
    return results


def report(results: dict[int, dict[str, Samples]], as_json: bool) -> None:
    header = f"{'conc':>4} {'path':>7} {'p50 ms':>8} {'p99 ms':>8} {'TTFT p50':>9} {'req/s':>7}"
    print(header)
    figures = {}
    for concurrency, paths in results.items():
        row = {}
        for path, samples in paths.items():
            row[path] = {
                "p50": statistics.median(samples.latencies),
                "p99": percentile(samples.latencies, 0.99),
                "ttft_p50": statistics.median(samples.ttfts),
                "rps": samples.rps,
            }
            r = row[path]
            print(
                f"{concurrency:>4} {path:>7} {r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} "
                f"{r['ttft_p50'] * 1e3:>9.1f} {r['rps']:>7.2f}"
            )
        ratio = {key: row["front"][key] / row["direct"][key] for key in row["front"]}
        verdict = (
            "ok" if ratio["p50"] <= 1.05 and ratio["ttft_p50"] <= 1.05 and ratio["rps"] >= 0.95 else "MISS"
        )
        print(
            f"{concurrency:>4} {'ratio':>7} {ratio['p50']:>8.3f} {ratio['p99']:>8.3f} "
            f"{ratio['ttft_p50']:>9.3f} {ratio['rps']:>7.3f}  {verdict}"
        )
        figures[concurrency] = {**row, "ratio": ratio}
    if as_json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
