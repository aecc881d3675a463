"""The ceiling of ``nimctl bench``'s load generator: how many requests and chunks per second it can
take in, against a server that costs (almost) nothing.

The server is a trivial one written on bare asyncio (uvloop when installed) in a child process: it
answers every ``POST /v1/completions`` with canned SSE: ``--chunks`` chunks of one token each, then
a usage chunk and ``[DONE]``, each written on its own, on keep-alive connections. On a machine with
two cores or more the server and this process are pinned to different cores, so they do not share
one. The generator is nimctl's own (``nimctl.bench.generator.LoadGenerator``, a connection pool of
the level's size, a timestamp per chunk), and its figures go through ``nimctl.bench.stats``, as in a
real run.

For each concurrency (1, 8, 32, 64 by default): one warm-up wave, then ``--requests`` requests; the
table shows requests/s and chunks/s (the stream chunks the generator read and timed), the CPU each
side used as a share of one core, and which side was the busier one. When the generator's CPU is
near 100 % it is the limit: those rates are its ceiling on this machine. When the server's is, the
generator's ceiling is higher than what was measured.

    python benchmarks/bench_generator.py                     # about 20 s
    python benchmarks/bench_generator.py --concurrency 32 --requests 4000 --chunks 128 --json out.json

Target (issue #14): at least 10x what the tiny model serves at concurrency 32. The baseline,
``--baseline-rps`` and ``--baseline-tok-s``, defaults to what ``nimctl.bench`` measured of
builtin://tiny-vlm through nim-serve on a 2-core machine at concurrency 32, 128 tokens in and 64 out
(64 requests): 43 req/s and 2,750 tok/s (benchmarks/lora.py measured ~19 req/s and ~1,200 tok/s of
tiny-llm at concurrency 8). Measure your own model with ``nimctl bench`` and pass its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from _nim_serve import free_port  # the benchmarks' folder is on sys.path

from nimctl.bench.generator import LoadGenerator
from nimctl.bench.stats import level_stats
from nimctl.bench.workload import Workload


def serve(port: int, chunks: int) -> None:
    """The trivial server (run as ``bench_generator.py --serve PORT``): canned SSE on keep-alive."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    def frame(data: bytes) -> bytes:  # one HTTP/1.1 chunk holding one SSE event
        event = b"data: " + data + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(event), event)

    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    token = frame(b'{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":" x"}]}')
    last = frame(b'{"id":"cmpl-1","choices":[{"index":0,"text":" x","finish_reason":"length"}]}')
    usage = frame(b'{"choices":[],"usage":{"prompt_tokens":16,"completion_tokens":%d}}' % chunks)
    tail = frame(b"[DONE]") + b"0\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in header.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(head)
                for _ in range(chunks - 1):
                    writer.write(token)
                    await writer.drain()
                    await asyncio.sleep(0)  # each chunk leaves on its own, as an engine's tokens do
                writer.write(last + usage + tail)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_server(port: int, chunks: int, pin: int | None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--chunks", str(chunks)])
    if pin is not None:
        os.sched_setaffinity(process.pid, {pin})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with __import__("socket").create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("the trivial server did not start")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def measure(
    url: str, concurrency: int, requests: int, chunks: int, server: psutil.Process
) -> dict[str, Any]:
    workload = Workload((concurrency,), 16, chunks, requests=requests)
    body = workload.request_body("trivial", "the of and to in is you that it he was for on are as")
    generator = LoadGenerator(url, timeout_s=30)
    await generator.run_level(lambda _: body, concurrency, requests=concurrency)  # warm-up: open the pool
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    server_before = cpu_seconds(server)
    run = await generator.run_level(lambda _: body, concurrency, requests=requests)
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = cpu_seconds(server) - server_before
    own_cpu = (own_after.ru_utime - own_before.ru_utime) + (own_after.ru_stime - own_before.ru_stime)
    stats = level_stats(run, output_tokens=chunks)
    if stats.ok != requests or stats.output_mismatches:
        sys.exit(
            f"concurrency {concurrency}: {stats.ok} of {requests} ok; "
            f"errors {stats.errors}: {stats.first_error}"
        )
    chunks_read = sum(result.chunks for result in run.results)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "duration_s": run.duration_s,
        "requests_per_s": stats.requests_per_s,
        "chunks_per_s": chunks_read / run.duration_s,
        "generator_cpu": own_cpu / run.duration_s,
        "server_cpu": server_cpu / run.duration_s,
        "ttft_p50_ms": stats.ttft.p50,
        "e2e_p50_ms": stats.e2e.p50,
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace, pinned: bool) -> None:
    load = os.getloadavg()[0]
    print(
        "\nnimctl bench's generator against a trivial SSE server on loopback: "
        f"{args.chunks} chunks a request; "
        f"{os.cpu_count()} cores, {'pinned apart' if pinned else 'not pinned'}; load average {load:.2f}"
    )
    print(
        f"{'conc':>5} {'requests':>9} {'req/s':>9} {'chunks/s':>10} "
        f"{'gen CPU':>8} {'srv CPU':>8} {'busier':>9}"
    )
    for row in rows:
        busier = "generator" if row["generator_cpu"] >= row["server_cpu"] else "server"
        print(
            f"{row['concurrency']:>5} {row['requests']:>9} {row['requests_per_s']:>9,.0f} "
            f"{row['chunks_per_s']:>10,.0f} {row['generator_cpu']:>8.0%} "
            f"{row['server_cpu']:>8.0%} {busier:>9}"
        )
    at32 = next((row for row in rows if row["concurrency"] == 32), None)
    if at32 is not None:
        rps_x = at32["requests_per_s"] / args.baseline_rps
        tok_x = at32["chunks_per_s"] / args.baseline_tok_s
        print(
            f"\nat concurrency 32: {rps_x:,.0f}x the baseline's {args.baseline_rps:g} req/s and "
            f"{tok_x:,.0f}x its {args.baseline_tok_s:,.0f} tok/s (target: 10x): "
            + ("met" if min(rps_x, tok_x) >= 10 else "NOT met")
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", default="1,8,32,64", help="comma-separated")
    parser.add_argument(
        "--requests", type=int, default=0, help="per level (default: 40 per slot, at least 300)"
    )
    parser.add_argument("--chunks", type=int, default=64, help="stream chunks (tokens) per request")
    parser.add_argument("--baseline-rps", type=float, default=43.0)
    parser.add_argument("--baseline-tok-s", type=float, default=2750.0)
    parser.add_argument("--no-pin", action="store_true", help="let the two processes share the cores")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.chunks)
        return
    if args.chunks < 2:
        parser.error("--chunks: 2 or more")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) >= 2 and not args.no_pin
    port = free_port()
    process = start_server(port, args.chunks, cores[1] if pinned else None)
    if pinned:
        os.sched_setaffinity(0, {cores[0]})
    rows = []
    try:
        server = psutil.Process(process.pid)
        for concurrency in (int(level) for level in args.concurrency.split(",")):
            requests = args.requests or max(300, 40 * concurrency)
            rows.append(
                asyncio.run(measure(f"http://127.0.0.1:{port}", concurrency, requests, args.chunks, server))
            )
            print(f"concurrency {concurrency} done", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        process.terminate()
        process.wait(10)
    report(rows, args, pinned)
    if args.json:
        args.json.write_text(
            json.dumps({"chunks": args.chunks, "pinned": pinned, "levels": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
