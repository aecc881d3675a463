"""Soak: mixed traffic for a while, watching the front's and the engine's memory, fds and errors.

Good and bad requests, streaming and not, some streams dropped by the client after the first
chunk, at a modest concurrency, for ``--minutes``. Every ``--every`` requests one row: requests
so far, the front's RSS, the engine's RSS (all its processes summed), open file descriptors of
both, the log's size (when this script started the server), and the errors by kind: expected
4xx, unexpected 5xx, transport errors (a dropped stream is not one).

    python benchmarks/soak.py --minutes 5                   # starts nim-serve with builtin://tiny-vlm
    python benchmarks/soak.py --url http://127.0.0.1:8000   # a running front (memory: if found here)

Targets: flat memory and fds from the second row on (the first is warm-up), 0 unexpected errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from _nim_serve import free_port, start_nim_serve  # the benchmarks' folder is on sys.path
from PIL import Image

ENGINE_MODULE = "vllm.entrypoints.openai.api_server"
IMAGE_SIZE = (64, 48)


@dataclass
class Tally:
    requests: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # ok, 4xx, 5xx, transport
    statuses: Counter[str] = field(default_factory=Counter)  # "what -> status", for the end


# --- Traffic ------------------------------------------------------------------------------------


def png_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, (200, 40, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


IMAGE_URL = png_data_url()


def chat(model: str, *, stream: bool, tokens: int = 8, image: bool = False) -> dict[str, object]:
    content: object = "Say something about the sea."
    if image:
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": IMAGE_URL}},
        ]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "seed": 7,
        "stream": stream,
    }


def bad_requests(model: str) -> list[tuple[str, str, str, dict[str, object] | None]]:
    """(what, method, path, body) of requests a client gets a 4xx for."""
    return [
        (
            "unknown model",
            "POST",
            "/v1/chat/completions",
            {**chat(model, stream=False), "model": "no-such-model"},
        ),
        ("no messages", "POST", "/v1/chat/completions", {"model": model, "max_tokens": 4}),
        (
            "structured_outputs: 7",
            "POST",
            "/v1/completions",
            {"model": model, "prompt": "x", "structured_outputs": 7},
        ),
        ("negative max_tokens", "POST", "/v1/completions", {"model": model, "prompt": "x", "max_tokens": -1}),
        ("not JSON", "POST", "/v1/chat/completions", None),
        ("no such route", "GET", "/v1/no-such-route", None),
    ]


async def one(client: httpx.AsyncClient, model: str, pick: random.Random, tally: Tally) -> None:
    roll = pick.random()
    try:
        if roll < 0.30:
            what = "chat"
            response = await client.post("/v1/chat/completions", json=chat(model, stream=False))
            status = response.status_code
        elif roll < 0.40:
            what = "chat with image"
            response = await client.post("/v1/chat/completions", json=chat(model, stream=False, image=True))
            status = response.status_code
        elif roll < 0.55:
            what = "completion stream"
            body = {"model": model, "prompt": "Once", "max_tokens": 16, "ignore_eos": True, "stream": True}
            async with client.stream("POST", "/v1/completions", json=body) as response:
                status = response.status_code
                async for _ in response.aiter_lines():
                    pass
        elif roll < 0.70:
            what = "chat stream, dropped"  # the client goes after the first chunk
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat(model, stream=True, tokens=64)
            ) as response:
                status = response.status_code
                async for _ in response.aiter_lines():
                    break
        else:
            what, method, path, body = pick.choice(bad_requests(model))
            if body is None and method == "POST":
                response = await client.post(
                    path, content=b"{not json", headers={"content-type": "application/json"}
                )
            else:
                response = await client.request(method, path, json=body)
            status = response.status_code
    except httpx.TransportError as exc:
        tally.kinds["transport"] += 1
        tally.statuses[f"{type(exc).__name__}"] += 1
        return
    finally:
        tally.requests += 1
    tally.kinds["ok" if status < 400 else "4xx" if status < 500 else "5xx"] += 1
    tally.statuses[f"{what} -> {status}"] += 1


# --- Watching the processes ---------------------------------------------------------------------


def listening_pid(port: int) -> int | None:
    """The process listening on ``port`` on this machine, if it can be seen from here."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except psutil.AccessDenied:
        return None
    return None


def engine_tree(front: psutil.Process) -> list[psutil.Process]:
    for child in front.children():
        try:
            if ENGINE_MODULE in " ".join(child.cmdline()):
                return [child, *child.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return []


def usage(processes: list[psutil.Process]) -> tuple[float, int]:
    """RSS in MiB and open fds, summed."""
    rss, fds = 0, 0
    for process in processes:
        try:
            rss += process.memory_info().rss
            fds += process.num_fds()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss / 2**20, fds


HEADER = (
    f"{'requests':>8} {'min':>5} {'req/s':>6} {'front MiB':>9} {'engine MiB':>10} {'front fds':>9} "
    f"{'engine fds':>10} {'log KiB':>8} {'4xx':>5} {'5xx':>4} {'transport':>9}"
)


def row(
    tally: Tally, started: float, since: tuple[float, int], front_pid: int | None, log: Path | None
) -> str:
    elapsed = time.monotonic() - started
    rate = (tally.requests - since[1]) / max(time.monotonic() - since[0], 1e-9)
    front_mib = engine_mib = "-"
    front_fds = engine_fds = "-"
    if front_pid is not None:
        with_front = psutil.Process(front_pid)
        f_rss, f_fds = usage([with_front])
        e_rss, e_fds = usage(engine_tree(with_front))
        front_mib, engine_mib, front_fds, engine_fds = f"{f_rss:.1f}", f"{e_rss:.1f}", str(f_fds), str(e_fds)
    log_kib = f"{log.stat().st_size / 1024:.0f}" if log is not None else "-"
    kinds = tally.kinds
    return (
        f"{tally.requests:>8} {elapsed / 60:>5.1f} {rate:>6.1f} {front_mib:>9} {engine_mib:>10} "
        f"{front_fds:>9} {engine_fds:>10} {log_kib:>8} "
        f"{kinds['4xx']:>5} {kinds['5xx']:>4} {kinds['transport']:>9}"
    )


async def soak(
    url: str,
    minutes: float,
    concurrency: int,
    every: int,
    seed: int,
    front_pid: int | None,
    log: Path | None,
    say: Callable[[str], None],
) -> Tally:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        tally = Tally()
        started = time.monotonic()
        deadline = started + minutes * 60
        mark = (started, 0)
        next_row = every
        say(HEADER)

        async def worker(index: int) -> None:
            nonlocal mark, next_row
            pick = random.Random(seed + index)
            while time.monotonic() < deadline:
                await one(client, model, pick, tally)
                if tally.requests >= next_row:
                    next_row += every
                    say(row(tally, started, mark, front_pid, log))
                    mark = (time.monotonic(), tally.requests)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        if tally.requests % every:
            say(row(tally, started, mark, front_pid, log) + "  (end)")
        return tally


# --- Running it ---------------------------------------------------------------------------------




def start_server(model: str, cache: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {**os.environ, "NIM_MODEL_PATH": model, "NIM_SERVER_PORT": str(port), "NIM_CACHE_PATH": cache}
    log = Path(tempfile.mkdtemp(prefix="nimctl-soak-log-")) / "nim-serve.log"
    return start_nim_serve(env, log, port), f"http://127.0.0.1:{port}", log


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running front (default: start nim-serve here)")
    parser.add_argument("--model-path", default="builtin://tiny-vlm", help="model when starting a server")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--every", type=int, default=1000, help="requests between rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    server, log, own_cache = None, None, None
    if args.url:
        url = args.url.rstrip("/")
        front_pid = listening_pid(httpx.URL(url).port or 80)
    else:
        cache = os.environ.get("NIM_CACHE_PATH") or (
            own_cache := tempfile.mkdtemp(prefix="nimctl-soak-cache-")
        )
        server, url, log = start_server(args.model_path, cache)
        front_pid = server.pid
        print(f"nim-serve pid {front_pid} on {url}; log {log}", file=sys.stderr)
    try:
        tally = asyncio.run(
            soak(
                url,
                args.minutes,
                args.concurrency,
                args.every,
                args.seed,
                front_pid,
                log,
                lambda s: print(s, flush=True),
            )
        )
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(120)
        if own_cache is not None:  # a generated model: set NIM_CACHE_PATH to keep one between runs
            shutil.rmtree(own_cache, ignore_errors=True)
    print("\nby request kind and status:")
    for what, count in sorted(tally.statuses.items()):
        print(f"  {count:>7}  {what}")
    unexpected = tally.kinds["5xx"] + tally.kinds["transport"]
    print(f"\nunexpected errors: {unexpected} ({'ok' if unexpected == 0 else 'MISS'})")


if __name__ == "__main__":
    main()
