"""What a LoRA adapter costs here: the base model and each adapter, side by side, on one server.

One nim-serve: builtin://tiny-llm with nimctl's demo adapters (NIM_PEFT_SOURCE, read once at start),
tiny-llm-lora-r8 (rank 8 on q_proj and v_proj) and tiny-llm-lora-r16 (rank 16 on all seven linear
layers); the demo's broken adapter is skipped by the server and left out. The base model is served
by the same LoRA-enabled engine, so the ratios show what naming an adapter in a request costs, not
what turning LoRA on costs.

For each concurrency (1, 8) and model: a warm-up wave, then ``--requests`` streamed completions
(12 at concurrency 1, 64 at 8) in each of ``--rounds`` rounds (3); in each round the models take
turns, in a rotated order, so drift in the machine's load hits them alike. Every request: the same
prompt, ``--max-tokens`` 64, ignore_eos, temperature 0; one client process (httpx, asyncio), at most
``conc`` requests in flight.

How to read the table:
  req/s, tok/s       requests finished and output tokens (usage.completion_tokens) per second of a
                     round, the median over the rounds (``--json`` has each round's)
  TTFT p50, p95      from sending a request to its first chunk carrying text, over all the rounds
  tok/s vs base      the model's tok/s over the base model's, same concurrency: below 1 is the cost
  TTFT p50 vs base   the model's TTFT p50 over the base model's: above 1 is the cost

    python benchmarks/lora.py                             # the demo adapters, about 2-3 minutes on 2 cores
    python benchmarks/lora.py --requests 32,128 --rounds 5 --json lora.json
    python benchmarks/lora.py --lora-dir DIR --model-path builtin://tiny-llm   # every adapter DIR serves

The load average before and after the run is printed with the table: on a shared machine, compare
runs made at a similar load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from _nim_serve import free_port, start_nim_serve, stop  # the benchmarks' folder is on sys.path

from nimctl import contract
from nimctl.lora.demo import ensure_demo_adapters
from nimctl.store.layout import demo_loras_dir

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle. Once upon a time,"


@dataclass
class Run:
    """One model at one concurrency: its requests over all its rounds, and each round's rates."""

    ttfts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    rounds: list[dict[str, float]] = field(default_factory=list)  # each round's req/s and tok/s

    @property
    def figures(self) -> dict[str, Any]:
        ttfts = sorted(self.ttfts)
        return {
            "requests": len(self.latencies),
            "rps": statistics.median(r["rps"] for r in self.rounds),
            "tok_s": statistics.median(r["tok_s"] for r in self.rounds),
            "ttft_p50": statistics.median(ttfts),
            "ttft_p95": statistics.quantiles(ttfts, n=20, method="inclusive")[18],
            "latency_p50": statistics.median(self.latencies),
            "tokens_per_request": self.tokens / len(self.latencies),
            "rounds": self.rounds,
        }


async def one_request(client: httpx.AsyncClient, payload: dict[str, Any], out: Run) -> None:
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=payload) as response:
        if response.status_code != 200:
            body = (await response.aread())[:300].decode(errors="replace")
            sys.exit(f"{payload['model']}: answered {response.status_code}: {body}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(choice.get("text") for choice in chunk.get("choices") or ()):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    if tokens != payload["max_tokens"]:
        sys.exit(f"{payload['model']}: {tokens} tokens instead of {payload['max_tokens']} (ignore_eos)")
    out.latencies.append(end - started)
    out.ttfts.append((first or end) - started)
    out.tokens += tokens


async def run_batch(url: str, model: str, concurrency: int, requests: int, max_tokens: int, out: Run) -> None:
    payload = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(120.0)) as client:
        left = [requests]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await one_request(client, payload, out)

        done, tokens, started = len(out.latencies), out.tokens, time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
        wall = time.perf_counter() - started
        out.rounds.append({"rps": (len(out.latencies) - done) / wall, "tok_s": (out.tokens - tokens) / wall})


def measure(url: str, models: list[str], args: argparse.Namespace) -> dict[int, dict[str, dict[str, Any]]]:
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for concurrency in args.concurrency:
        for model in models:  # one wave each: LoRA slots filled, this batch size seen once
            asyncio.run(run_batch(url, model, concurrency, concurrency * args.warmup, args.max_tokens, Run()))
        runs = {model: Run() for model in models}
        for index in range(args.rounds):
            shift = index % len(models)
            for model in models[shift:] + models[:shift]:
                requests = args.requests[concurrency]
                asyncio.run(run_batch(url, model, concurrency, requests, args.max_tokens, runs[model]))
        results[concurrency] = {model: run.figures for model, run in runs.items()}
        base = results[concurrency][models[0]]
        for figures in results[concurrency].values():
            figures["tok_s_vs_base"] = figures["tok_s"] / base["tok_s"]
            figures["ttft_p50_vs_base"] = figures["ttft_p50"] / base["ttft_p50"]
        print(f"concurrency {concurrency} done", file=sys.stderr)
    return results


def served(url: str) -> tuple[str, list[str], list[dict[str, Any]]]:
    """The base model's name, the adapters' names (by rank, then name) and /v1/metadata's word on them."""
    cards = httpx.get(url + "/v1/models", timeout=30).json()["data"]
    bases = [card["id"] for card in cards if not card.get("parent")]
    lora = httpx.get(url + "/v1/metadata", timeout=30).json().get("loraAdapters") or {}
    rank = {adapter["name"]: adapter["rank"] for adapter in lora.get("loaded", ())}
    adapters = sorted((card["id"] for card in cards if card.get("parent")), key=lambda n: (rank.get(n, 0), n))
    if len(bases) != 1 or not adapters:
        sys.exit(f"expected one base model and some adapters, the server lists {[c['id'] for c in cards]}")
    for skipped in lora.get("skipped", ()):
        print(f"skipped by the server: {skipped['name']}: {skipped['reason']}", file=sys.stderr)
    return bases[0], adapters, sorted(lora.get("loaded", []), key=lambda a: (a["rank"], a["name"]))


def report(model_path: str, loaded: list[dict[str, Any]], results: dict[int, Any], load: list[str]) -> None:
    print(f"\n{model_path} on one nim-serve; load average {load[0]} before, {load[1]} after")
    for adapter in loaded:
        targets = ", ".join(adapter["target_modules"])
        print(f"  {adapter['name']}: rank {adapter['rank']} on {targets}")
    width = max(len(model) for row in results.values() for model in row)
    print(
        f"\n{'model':<{width}} {'conc':>4} {'req/s':>7} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p95':>9}"
        f" {'tok/s vs base':>14} {'TTFT p50 vs base':>17}"
    )
    for concurrency, row in results.items():
        for model, f in row.items():
            print(
                f"{model:<{width}} {concurrency:>4} {f['rps']:>7.2f} {f['tok_s']:>7.1f}"
                f" {f['ttft_p50'] * 1e3:>6.1f} ms {f['ttft_p95'] * 1e3:>6.1f} ms"
                f" {f['tok_s_vs_base']:>14.3f} {f['ttft_p50_vs_base']:>17.3f}"
            )


def our_servers() -> list[psutil.Process]:
    """nim-serve children of this process (one start_nim_serve began but had not handed back)."""
    return [
        child for child in psutil.Process().children() if child.cmdline()[1:4] == ["-m", "nimctl", "serve"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-path", default="builtin://tiny-llm")
    parser.add_argument("--lora-dir", type=Path, help="adapters to serve (default: the demo adapters)")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated")
    parser.add_argument(
        "--requests", default="12,64", help="per model and round, one for each concurrency (or one for all)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="waves of conc requests before measuring")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the figures here ('-': to stdout, no table)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    requests = [int(n) for n in args.requests.split(",")]
    if len(requests) == 1:
        requests *= len(args.concurrency)
    if len(requests) != len(args.concurrency) or min(requests) < 2 or args.rounds < 1:
        parser.error(
            "--requests: one count (at least 2) for each concurrency, or one for all; --rounds: 1 or more"
        )
    args.requests = dict(zip(args.concurrency, requests, strict=True))

    cache = Path(os.environ.get(contract.CACHE_PATH) or contract.host_cache_dir())
    if args.lora_dir is None:
        base = args.model_path.removeprefix("builtin://")
        args.lora_dir = ensure_demo_adapters(base, demo_loras_dir(cache))
    # SIGTERM (a timeout, a CI cancel) ends this script through its finally blocks, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("NIMCTL_API_KEY", "NIMCTL_API_KEY_FILE")},
        contract.MODEL_PATH: args.model_path,
        contract.SERVER_PORT: str(port),
        contract.CACHE_PATH: str(cache),
        contract.PEFT_SOURCE: str(args.lora_dir.resolve()),
        "NIM_LOG_LEVEL": "WARNING",
    }
    env.pop(contract.PEFT_REFRESH_INTERVAL, None)  # static: the folder is read once, at start
    log = Path(tempfile.mkdtemp(prefix="nimctl-lora-bench-")) / "nim-serve.log"
    print(f"nim-serve: {args.model_path}, adapters from {args.lora_dir}; log {log}", file=sys.stderr)
    load = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    try:
        server = psutil.Process(start_nim_serve(env, log, port).pid)
    except BaseException:  # Ctrl-C while waiting for readiness: the server had not been handed back
        for child in our_servers():
            stop(child)
        raise
    try:
        url = f"http://127.0.0.1:{port}"
        base_name, adapters, loaded = served(url)
        results = measure(url, [base_name, *adapters], args)
    finally:
        stop(server)
    load.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    figures = {
        "model_path": args.model_path,
        "adapters": loaded,
        "settings": {k: v for k, v in vars(args).items() if k != "json"} | {"lora_dir": str(args.lora_dir)},
        "load_average": {"before": load[0], "after": load[1]},
        "cpus": os.cpu_count(),
        "results": {str(c): row for c, row in results.items()},
    }
    if str(args.json) == "-":
        json.dump(figures, sys.stdout, indent=2)
        print()
        return
    report(args.model_path, loaded, results, load)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # nim-serve was stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
