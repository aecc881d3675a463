"""What the front costs, design by design: the same chat requests straight to the engine and
through each data-path design, in one run.

Designs (benchmarks/design_*.py; each starts its own server and engine, one after the other):
  lean       nim-serve as shipped: the relayed routes in one plain ASGI handler (the default)
  framework  nim-serve with NIMCTL_FRONT_DATA_PATH=framework: through FastAPI's stack, as before
  nginx      nginx on the data path, nim-serve beside it for the rest (a prototype; needs nginx)
  in-vllm    nimctl's checks as middleware inside vLLM's own API server (a prototype, no hop)
Every design runs with an API key, sent on its path (``lean-open``: lean without a key).

For each design and concurrency (1, 8, 32), rounds alternate between the design's path and the
bare engine behind it ("direct"), so drift in the machine's load hits both alike. Every request
streams (16 tokens, ignore_eos); each round gives its p50 latency, p50 time to first token and
requests/s, and the table shows the median over the rounds of each path, and their ratio.

The front's CPU per request and per streamed chunk comes from /proc (schedstat of every thread of
the design's front processes) over two legs of 2 x 500 requests each, one of 1-token answers and
one of 16-token ones, each sent through the design and direct, alternating: the front's CPU over a leg is
``a * requests + b * chunks`` (chunks: the SSE events the client got), solved from the two legs,
after taking out the front's idle background (its CPU rate over the direct legs, where it relays
nothing, times the leg's length). For a design inside the engine's process the direct legs' CPU
is subtracted instead (it is the engine's own work).
The load generator (this process, aiohttp) shows its own CPU, as a share of one core, beside it.

    python benchmarks/front_overhead.py                          # every design available here
    python benchmarks/front_overhead.py --design lean,framework --rounds 5

Targets (issue #11): p50 and TTFT ratios <= 1.03, throughput ratio >= 0.97 at every concurrency;
front CPU <= 0.1 ms per request and <= 0.01 ms per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from _designs import Deployment

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
DESIGNS = ("lean", "framework", "nginx", "in-vllm")
TARGETS = {"p50": 1.03, "ttft": 1.03, "rps": 0.97, "cpu_request_ms": 0.1, "cpu_chunk_ms": 0.01}


@dataclass
class Round:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    chunks: int = 0
    wall: float = 0.0
    loadgen_cpu: float = 0.0  # seconds of this process's CPU
    front_cpu: float = 0.0  # seconds of the design's front processes' CPU

    def plus(self, other: Round) -> Round:
        return Round(
            self.latencies + other.latencies,
            self.ttfts + other.ttfts,
            self.chunks + other.chunks,
            self.wall + other.wall,
            self.loadgen_cpu + other.loadgen_cpu,
            self.front_cpu + other.front_cpu,
        )

    @property
    def figures(self) -> dict[str, float]:
        return {
            "p50": statistics.median(self.latencies),
            "ttft": statistics.median(self.ttfts),
            "rps": len(self.latencies) / self.wall,
            "loadgen": self.loadgen_cpu / self.wall,
        }


def process_cpu(pids: list[int]) -> float:
    """CPU time of ``pids``, all their threads (not their children), in seconds; a gone one counts 0.

    From /proc/PID/task/TID/schedstat (nanoseconds on the CPU): /proc/PID/stat's utime and stime
    count 10 ms clock ticks, too coarse for a few hundred requests at a fraction of a ms each."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that ended meanwhile
    return total / 1e9


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_request(session: aiohttp.ClientSession, url: str, payload: bytes, out: Round) -> None:
    started = time.perf_counter()
    first = None
    async with session.post(url, data=payload) as response:
        if response.status != 200:
            sys.exit(f"{url} answered {response.status}: {(await response.text())[:300]}")
        async for line in response.content:
            if line.startswith(b"data: "):
                out.chunks += 1
                if first is None and b'"content"' in line:
                    first = time.perf_counter()
    end = time.perf_counter()
    out.latencies.append(end - started)
    out.ttfts.append((first or end) - started)


async def run_round(
    deployment: Deployment, path: str, model: str, concurrency: int, requests: int, max_tokens: int
) -> Round:
    payload = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Describe a quiet morning in a small town."}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
        }
    ).encode()
    base = deployment.direct_url if path == "direct" else deployment.url
    url = base + "/v1/chat/completions"
    headers = {"Content-Type": "application/json", **deployment.headers(path)}
    out = Round()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        left = [requests]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await one_request(session, url, payload, out)

        cpu_before, front_before, started = own_cpu(), process_cpu(deployment.front_pids), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.wall = time.perf_counter() - started
        out.loadgen_cpu = own_cpu() - cpu_before
        out.front_cpu = process_cpu(deployment.front_pids) - front_before
    return out


def served_model(deployment: Deployment) -> str:
    async def read() -> str:
        async with (
            aiohttp.ClientSession(headers=deployment.headers("front")) as session,
            session.get(deployment.url + "/v1/models") as response,
        ):
            if response.status != 200:
                sys.exit(f"{deployment.name}: /v1/models answered {response.status}")
            return str((await response.json())["data"][0]["id"])

    return asyncio.run(read())


def measure_latency(deployment: Deployment, model: str, args: argparse.Namespace) -> dict[int, Any]:
    results: dict[int, Any] = {}
    for concurrency in args.concurrency:
        requests = max(64, 8 * concurrency)
        rounds: dict[str, list[Round]] = {"direct": [], "design": []}
        for index in range(args.rounds):
            for path in ("direct", "design") if index % 2 == 0 else ("design", "direct"):
                rounds[path].append(
                    asyncio.run(run_round(deployment, path, model, concurrency, requests, args.max_tokens))
                )
        medians = {
            path: {
                key: statistics.median(r.figures[key] for r in rs)
                for key in ("p50", "ttft", "rps", "loadgen")
            }
            for path, rs in rounds.items()
        }
        ratio = {key: medians["design"][key] / medians["direct"][key] for key in ("p50", "ttft", "rps")}
        results[concurrency] = {**medians, "ratio": ratio}
        print(f"{deployment.name}: concurrency {concurrency} done", file=sys.stderr)
    return results


def measure_cpu(deployment: Deployment, model: str, args: argparse.Namespace) -> dict[str, float]:
    """The front's CPU per request and per chunk, from a 1-token and a ``--max-tokens`` leg."""
    legs: dict[int, dict[str, Round]] = {1: {}, args.max_tokens: {}}
    for repeat in range(2):  # each leg twice, alternating, summed: drift hits all four alike
        for max_tokens in (1, args.max_tokens) if repeat == 0 else (args.max_tokens, 1):
            for path in ("design", "direct"):
                done = asyncio.run(run_round(deployment, path, model, 8, args.cpu_requests, max_tokens))
                legs[max_tokens][path] = legs[max_tokens][path].plus(done) if repeat else done

    # The front's idle work (health probes, its log reader) runs through every leg: its rate over the
    # direct legs, where the front relays nothing, is taken out of the design legs by their length.
    direct_legs = [leg["direct"] for leg in legs.values()]
    background = sum(r.front_cpu for r in direct_legs) / sum(r.wall for r in direct_legs)

    def front_cost(leg: dict[str, Round]) -> float:
        if deployment.cpu_shared_with_engine:  # the same process did the engine's work on both paths
            return leg["design"].front_cpu - leg["direct"].front_cpu
        return leg["design"].front_cpu - background * leg["design"].wall

    short, long = legs[1], legs[args.max_tokens]
    extra_chunks = long["design"].chunks - short["design"].chunks
    per_chunk = (front_cost(long) - front_cost(short)) / extra_chunks if extra_chunks > 0 else 0.0
    requests = len(short["design"].latencies)
    per_request = (front_cost(short) - per_chunk * short["design"].chunks) / requests
    return {
        "request_ms": per_request * 1e3,
        "chunk_ms": per_chunk * 1e3,
        "chunks_per_request": long["design"].chunks / len(long["design"].latencies),
        "background_share": 0.0 if deployment.cpu_shared_with_engine else background,
        "loadgen_share": max(r.loadgen_cpu / r.wall for leg in legs.values() for r in leg.values()),
    }


def report(name: str, latency: dict[int, Any], cpu: dict[str, float], gaps: list[str]) -> None:
    print(f"\n{name}")
    print(f"{'conc':>4} {'path':>7} {'p50 ms':>8} {'TTFT ms':>8} {'req/s':>7} {'loadgen CPU':>12}")
    for concurrency, row in latency.items():
        for path in ("direct", "design"):
            figures = row[path]
            print(
                f"{concurrency:>4} {path if path == 'direct' else name[:7]:>7} {figures['p50'] * 1e3:>8.1f} "
                f"{figures['ttft'] * 1e3:>8.1f} {figures['rps']:>7.1f} {figures['loadgen'] * 100:>11.0f}%"
            )
        ratio = row["ratio"]
        ok = (
            ratio["p50"] <= TARGETS["p50"]
            and ratio["ttft"] <= TARGETS["ttft"]
            and ratio["rps"] >= TARGETS["rps"]
        )
        print(
            f"{concurrency:>4} {'ratio':>7} {ratio['p50']:>8.3f} {ratio['ttft']:>8.3f} {ratio['rps']:>7.3f}"
            f"  {'ok' if ok else 'MISS'}"
        )
    cpu_ok = cpu["request_ms"] <= TARGETS["cpu_request_ms"] and cpu["chunk_ms"] <= TARGETS["cpu_chunk_ms"]
    print(
        f"front CPU: {cpu['request_ms']:.3f} ms/request, {cpu['chunk_ms']:.4f} ms/chunk "
        f"({cpu['chunks_per_request']:.0f} chunks a request; "
        f"idle background {cpu['background_share'] * 100:.1f}% "
        f"of a core; load generator at most {cpu['loadgen_share'] * 100:.0f}% of a core)  "
        f"{'ok' if cpu_ok else 'MISS'}"
    )
    for gap in gaps:
        print(f"  does not keep: {gap}")


def summary(figures: dict[str, Any]) -> None:
    print("\nsummary (ratios design/direct: p50, TTFT, req/s at each concurrency; front CPU)")
    for name, entry in figures.items():
        ratios = "  ".join(
            f"c{c}: {r['ratio']['p50']:.3f} {r['ratio']['ttft']:.3f} {r['ratio']['rps']:.3f}"
            for c, r in entry["latency"].items()
        )
        cpu = entry["cpu"]
        print(f"{name:>10}  {ratios}  |  {cpu['request_ms']:.3f} ms/req {cpu['chunk_ms']:.4f} ms/chunk")


def start_design(name: str, model: str, workdir: Path) -> Deployment | None:
    key = None if name.endswith("-open") else secrets.token_urlsafe(32)
    base = name.removesuffix("-open")
    if base in ("lean", "framework"):
        return importlib.import_module("design_nim_serve").start(model, key, workdir, data_path=base)
    if base == "nginx" and shutil.which("nginx") is None:
        print("nginx: skipped (no nginx on PATH: apt-get install nginx-light)", file=sys.stderr)
        return None
    module = importlib.import_module(f"design_{base.replace('-', '_')}")
    deployment: Deployment = module.start(model, key, workdir)
    return deployment


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--design", default=",".join(DESIGNS), help=f"comma-separated, of {', '.join(DESIGNS)}"
    )
    parser.add_argument("--model-path", default="builtin://tiny-vlm")
    parser.add_argument("--concurrency", default="1,8,32")
    # Short rounds are at the mercy of one stall of a 2-core machine: a round lasts seconds.
    parser.add_argument("--rounds", type=int, default=6, help="rounds per path and concurrency (at least 5)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--cpu-requests", type=int, default=500, help="requests in each CPU leg")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    names = [n.strip() for n in args.design.split(",") if n.strip()]
    unknown = [n for n in names if n.removesuffix("-open") not in DESIGNS]
    if unknown or args.rounds < 1 or min(args.concurrency) < 1 or args.max_tokens < 2:
        parser.error(
            f"unknown design {unknown}" if unknown else "--rounds, --concurrency >= 1, --max-tokens >= 2"
        )

    figures: dict[str, Any] = {}
    for name in names:
        workdir = Path(tempfile.mkdtemp(prefix=f"nimctl-bench-{name}-"))
        deployment = start_design(name, args.model_path, workdir)
        if deployment is None:
            continue
        try:
            model = served_model(deployment)
            for path in ("design", "direct"):  # warm both paths
                asyncio.run(run_round(deployment, path, model, 2, 8, args.max_tokens))
            latency = measure_latency(deployment, model, args)
            cpu = measure_cpu(deployment, model, args)
        finally:
            deployment.stop()
        figures[deployment.name] = {"latency": latency, "cpu": cpu, "gaps": deployment.gaps}
        report(deployment.name, latency, cpu, deployment.gaps)
    summary(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
