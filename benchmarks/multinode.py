"""A two-node group against a single node: the same model, the same machine, the same workload.

Two setups, one after the other (never both up at once), each started fresh in every round:
  single   one nim-serve, builtin://tiny-vlm; its single-node CPU profile (vllm-fp32-tp1-pp1-cpu)
  2-node   two nim-serve processes on loopback, a leader (rank 0, 127.0.0.1) and a worker (rank 1,
           127.0.0.2, its own probe port), each given contract.node_environment(2, rank, ...) as
           every member description is; the engine runs tensor parallel 2 across the two nodes
           (vllm-fp32-tp2-pp1-cpu-2node), the requests go to the leader
Each setup is measured with nimctl's own bench, run as a user runs it:
``python -m nimctl bench --url URL --format json --concurrency 1,4 --requests N --input-tokens 128
--output-tokens 32 --seed S`` (its own warm-up of ``--warmup`` requests first; the same seed, so the
same prompts, for both setups). ``--rounds`` rounds (3), the setups' order alternating from one
round to the next so drift in the machine's load hits them alike; the table shows medians (each
round's figures go to stderr as it ends, and to ``--json``).

How to read the table:
  start-up s     from spawning the first process to the leader's (or the node's) /v1/health/ready 200
  tok/s, req/s   output tokens and successful requests per second of a level (nimctl bench's figures)
  TTFT p50       median time to first token of a level, ms
  2-node/single  the group's figure over the single node's: on one CPU the group is slower (tensor
                 parallel over loopback with gloo, two engines sharing the same cores); the point
                 is a figure to track, not a speed-up

    python benchmarks/multinode.py                       # about 10 minutes on 2 cores
    python benchmarks/multinode.py --rounds 5 --requests 32 --json multinode.json

The load average before and after the run is printed with the table: on a shared machine, compare
runs made at a similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from _nim_serve import free_port, start_nim_serve, stop  # the benchmarks' folder is on sys.path

from nimctl import contract
from nimctl.runtime.group import free_port_pair

SETUPS = ("single", "2-node")
BENCH_TIMEOUT_S = 1200
# Variables of the caller's shell that would change what either setup is (a key, a group, a profile).
DROPPED = (
    "NIMCTL_API_KEY", "NIMCTL_API_KEY_FILE", contract.NUM_COMPUTE_NODES, contract.NODE_RANK,
    contract.LEADER_ADDRESS, contract.LEADER_PORT, contract.NODE_ADDRESS, "NIM_MODEL_PROFILE",
    "NIMCTL_SERVER_HOST", "NIMCTL_URL",
)


def base_env(args: argparse.Namespace, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    return env | {
        contract.MODEL_PATH: args.model_path,
        contract.SERVER_PORT: str(port),
        contract.CACHE_PATH: str(args.cache),
        "NIM_LOG_LEVEL": "WARNING",
    }


def start_single(args: argparse.Namespace, logs: Path, live: list[psutil.Process]) -> tuple[str, float]:
    port = free_port()
    started = time.monotonic()
    live.append(psutil.Process(start_nim_serve(base_env(args, port), logs / "nim-serve.log", port).pid))
    return f"http://127.0.0.1:{port}", time.monotonic() - started


def start_group(args: argparse.Namespace, logs: Path, live: list[psutil.Process]) -> tuple[str, float]:
    """Leader and worker; the worker first (it waits for the leader), then until the leader is ready."""
    join_port, port = free_port_pair(contract.DEFAULT_LEADER_PORT), free_port()
    leader_env = base_env(args, port) | contract.node_environment(
        2, 0, "127.0.0.1", leader_port=join_port, node_address="127.0.0.1"
    )
    worker_env = base_env(args, free_port()) | contract.node_environment(
        2, 1, "127.0.0.1", leader_port=join_port, node_address="127.0.0.2"
    )
    worker_env["NIMCTL_SERVER_HOST"] = "127.0.0.2"  # its probe port, on its own address
    started = time.monotonic()
    worker = subprocess.Popen(
        [sys.executable, "-m", "nimctl", "serve"],
        env=worker_env,
        stdout=(logs / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    live.append(psutil.Process(worker.pid))
    # A worker that fails after joining makes the leader exit non-zero: start_nim_serve then stops.
    live.append(psutil.Process(start_nim_serve(leader_env, logs / "leader.log", port).pid))
    return f"http://127.0.0.1:{port}", time.monotonic() - started


def bench(args: argparse.Namespace, url: str, logs: Path, name: str) -> dict[str, Any]:
    """One ``nimctl bench`` run; its record's levels by concurrency, and the profile the server ran."""
    cmd = [sys.executable, "-m", "nimctl", "bench", "--url", url, "--format", "json"]
    cmd += ["--concurrency", ",".join(map(str, args.concurrency)), "--requests", str(args.requests)]
    cmd += ["--input-tokens", str(args.input_tokens), "--output-tokens", str(args.output_tokens)]
    cmd += ["--seed", str(args.seed), "--warmup", str(args.warmup)]
    # A run of this script is not one of the user's: its history goes to a folder of its own.
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env["NIMCTL_STATE_DIR"] = str(logs / "state")
    errlog = logs / f"bench-{name}.log"
    with errlog.open("w") as err:
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=BENCH_TIMEOUT_S
        )
    if done.returncode != 0:
        sys.exit(f"nimctl bench exited with {done.returncode}; {errlog}:\n{errlog.read_text()[-2000:]}")
    record = json.loads(done.stdout)
    results = record["results"]
    if results.get("failure") or results.get("interrupted"):
        sys.exit(f"nimctl bench stopped early: {results.get('failure') or 'interrupted'}")
    levels = {}
    for level in results["levels"]:
        if level["ok"] != level["requests"] or any(level["token_mismatches"].values()):
            sys.exit(f"{name}, concurrency {level['concurrency']}: {level['errors']}, "
                     f"token mismatches {level['token_mismatches']}")
        levels[level["concurrency"]] = {
            "tok_s": level["output_tokens_per_s"],
            "rps": level["requests_per_s"],
            "ttft_p50": level["ttft_ms"]["p50"],
            "ttft_mean": level["ttft_ms"]["mean"],
        }
    return {"profile": record["profile"]["name"], "levels": levels}


def one_round(
    args: argparse.Namespace, logs: Path, name: str,
    start: Callable[[argparse.Namespace, Path, list[psutil.Process]], tuple[str, float]],
) -> dict[str, Any]:
    """One setup started, benched and stopped; its logs in a folder of their own (``logs``)."""
    logs.mkdir(parents=True)
    live: list[psutil.Process] = []
    try:
        url, startup = start(args, logs, live)
        print(f"{logs.name}: ready in {startup:.1f} s; benching", file=sys.stderr)
        figures = bench(args, url, logs, name)
        levels = ", ".join(
            f"c{c} {f['tok_s']:.1f} tok/s TTFT p50 {f['ttft_p50']:.1f} ms"
            for c, f in figures["levels"].items()
        )
        print(f"{logs.name}: {levels}", file=sys.stderr)
        return {"startup_s": startup, **figures}
    finally:
        for process in reversed(live):  # the leader first: it says goodbye to its workers
            stop(process)
        for child in psutil.Process().children():  # one start_nim_serve began but had not handed back
            stop(child)


def medians(runs: list[dict[str, Any]], concurrency: list[int]) -> dict[str, Any]:
    return {
        "profile": runs[0]["profile"],
        "startup_s": statistics.median(r["startup_s"] for r in runs),
        "levels": {
            c: {key: statistics.median(r["levels"][c][key] for r in runs) for key in runs[0]["levels"][c]}
            for c in concurrency
        },
    }


def report(figures: dict[str, Any]) -> None:
    single, group = figures["single"], figures["2-node"]
    settings = figures["settings"]
    print(
        f"\n{settings['model_path']}, {settings['rounds']} round(s), "
        f"{settings['requests']} requests a level, "
        f"{settings['input_tokens']} tokens in, {settings['output_tokens']} out, seed {settings['seed']}; "
        f"{figures['cpus']} CPUs, load average {figures['load_average']['before']} before, "
        f"{figures['load_average']['after']} after"
    )
    print(f"  single: {single['profile']}\n  2-node: {group['profile']}\n")
    print(f"{'':<14}{'single':>10}{'2-node':>10}{'2-node/single':>15}")
    print(f"{'start-up s':<14}{single['startup_s']:>10.1f}{group['startup_s']:>10.1f}"
          f"{group['startup_s'] / single['startup_s']:>15.3f}")
    rows = (
        ("tok/s", "tok_s", "{:>10.1f}"),
        ("req/s", "rps", "{:>10.2f}"),
        ("TTFT p50 ms", "ttft_p50", "{:>10.1f}"),
    )
    for c in settings["concurrency"]:
        print(f"concurrency {c}")
        for label, key, form in rows:
            a, b = single["levels"][c][key], group["levels"][c][key]
            print(f"  {label:<12}{form.format(a)}{form.format(b)}{b / a:>15.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-path", default=contract.DEFAULT_MODEL)
    parser.add_argument("--concurrency", default="1,4", help="comma-separated")
    parser.add_argument("--requests", type=int, default=16, help="per level, as nimctl bench --requests")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7, help="the same prompts for both setups")
    parser.add_argument("--warmup", type=int, default=4, help="requests bench sends first, unmeasured")
    parser.add_argument("--rounds", type=int, default=3, help="each a fresh start of both setups")
    parser.add_argument("--json", type=Path, help="also write the figures here ('-': to stdout, no table)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.rounds < 1 or args.requests < 2:
        parser.error("--rounds: 1 or more; --requests: 2 or more")
    args.cache = Path(os.environ.get(contract.CACHE_PATH) or contract.host_cache_dir())
    # SIGTERM (a timeout, a CI cancel) ends this script through its finally blocks, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logs = Path(tempfile.mkdtemp(prefix="nimctl-multinode-bench-"))
    print(f"logs in {logs}", file=sys.stderr)
    starts = {"single": start_single, "2-node": start_group}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETUPS}
    load = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    for index in range(args.rounds):
        order = SETUPS if index % 2 == 0 else SETUPS[::-1]
        for name in order:
            runs[name].append(one_round(args, logs / f"{name}-round{index + 1}", name, starts[name]))
    load.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "cache")}
    figures: dict[str, Any] = {
        "settings": settings,
        "load_average": {"before": load[0], "after": load[1]},
        "cpus": os.cpu_count(),
        **{name: medians(runs[name], args.concurrency) for name in SETUPS},
        "rounds": runs,
    }
    if str(args.json) == "-":
        json.dump(figures, sys.stdout, indent=2)
        print()
        return
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # every server was stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
