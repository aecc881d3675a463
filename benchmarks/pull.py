"""What nimctl's pull costs over a plain ``huggingface_hub.snapshot_download`` of the same repo.

A synthetic model (a few large ``*.safetensors`` of random bytes and a handful of small JSON
files, ``--size-mb`` in total) is served by the tests' hub emulation on 127.0.0.1, and fetched
into a fresh, empty cache by each of these, every one a fresh Python process (so imports count
alike), the cache deleted after each:

  hf     snapshot_download(repo, cache_dir=...) with its own tqdm bars (stderr is a pipe)
  hf2    the same again: a control, whose ratio to hf is the noise floor of this machine
  lib    nimctl.store.pull.pull(repo, cache, on_progress=...) keeping the last progress, as a bar
  cli    nimctl pull --cache DIR hf://repo: the whole command; stderr is a pipe, so no bar is drawn
  bar    (--with-bar) the same command under a pseudo-terminal, so Rich draws its bar

Each round runs every path once, the order reversed every other round so drift hits all alike.
Figures are medians over the rounds: MB/s (1 MB = 1e6 bytes) from process start to exit ("wall"),
and over the download call alone, in the process ("call"), and the child's CPU seconds (user+sys;
less moved by other jobs than the wall clock, though not immune on a shared VM).
Ratios to hf are the median of each round's ratio.

    python benchmarks/pull.py                     # 1 GiB, 5 rounds
    python benchmarks/pull.py --size-mb 256 --rounds 7 --with-bar

Target (issue #12): ratio >= 0.95 for every nimctl path, wall and call.
Page cache cannot be dropped without root: the served files and the caches share one disk, and
the emulation serves from a warm page cache, so this measures the client, not the disk.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests/ is not installed
from tests.hub_emulation import HubEmulation

TARGET = 0.95
REPO = "nimctl-bench/synthetic-model"
SMALL_FILES = {  # name -> size: the small files a real checkpoint carries beside its weights
    "config.json": 1_500,
    "generation_config.json": 200,
    "model.safetensors.index.json": 30_000,
    "tokenizer.json": 2_000_000,
    "tokenizer_config.json": 50_000,
    "special_tokens_map.json": 600,
}
# nimctl imports huggingface_hub inside pull(): imported ahead here (the same modules, so the same process
# cost) so that "call" times the fetch alone, as in the hf child.
HUB_IMPORTS = "from huggingface_hub import HfApi, snapshot_download\n"
# A path that runs another's code: a control, whose ratio shows how far identical code moves here.
CONTROL = {"hf2": "hf"}
# Each child writes its in-process figures to the file named by its first argument.
TIMED = "import json, sys, time\nout = sys.argv[1]\nstarted = time.perf_counter()\n"
CHILDREN = {
    "hf": TIMED + "from huggingface_hub import snapshot_download\n"
    "call = time.perf_counter()\n"
    "snapshot_download(sys.argv[2], cache_dir=sys.argv[3] + '/huggingface')\n"
    "json.dump({'call': time.perf_counter() - call}, open(out, 'w'))\n",
    "lib": TIMED + HUB_IMPORTS + "from pathlib import Path\nfrom nimctl.store.pull import pull\n"
    "last = []\n"
    "def listen(progress):  # what the CLI's bar is handed, kept as a bar keeps it\n"
    "    last[:] = [progress]\n"
    "call = time.perf_counter()\n"
    "pull(sys.argv[2], Path(sys.argv[3]), on_progress=listen)\n"
    "json.dump({'call': time.perf_counter() - call}, open(out, 'w'))\n",
    # The console script's own two lines, with the command's pull_model timed (it is looked up at call time).
    "cli": TIMED + HUB_IMPORTS + "import nimctl.store.target as target\n"
    "inner, figures = target.pull_model, {}\n"
    "def timed(*args, **kwargs):\n"
    "    call = time.perf_counter()\n"
    "    try:\n        return inner(*args, **kwargs)\n"
    "    finally:\n        figures['call'] = time.perf_counter() - call\n"
    "target.pull_model = timed\n"
    "from nimctl.cli.main import main\n"
    "sys.argv = ['nimctl', 'pull', '--cache', sys.argv[3], 'hf://' + sys.argv[2]]\n"
    "try:\n    sys.exit(main())\n"
    "finally:\n    json.dump(figures, open(out, 'w'))\n",
}
CHILDREN["bar"] = CHILDREN["cli"]


def make_repo(folder: Path, size: int, shards: int) -> dict[str, int]:
    """The synthetic model's files (name -> size): random bytes, so nothing on the path compresses them."""
    folder.mkdir(parents=True)
    files = dict(SMALL_FILES)
    weights = max(size - sum(files.values()), shards)
    for index in range(shards):
        files[f"model-{index + 1:05d}-of-{shards:05d}.safetensors"] = weights // shards + (
            weights % shards if index == 0 else 0
        )
    for name, nbytes in files.items():
        with (folder / name).open("wb") as out:
            for offset in range(0, nbytes, 16 << 20):
                out.write(os.urandom(min(16 << 20, nbytes - offset)))
    return files


def child_env(url: str, home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_")) and k != "NO_COLOR"
    }
    env.update(
        HF_ENDPOINT=url, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(home), TERM=env.get("TERM", "xterm")
    )
    return env


def run_child(path: str, cache: Path, env: dict[str, str]) -> dict[str, float]:
    """One fetch in a fresh process; its wall time (start to exit) and in-process call time."""
    figures_file = cache.parent / f"{cache.name}.json"
    argv = [sys.executable, "-c", CHILDREN[CONTROL.get(path, path)], str(figures_file), REPO, str(cache)]
    before, started = children_cpu(), time.perf_counter()
    if path == "bar":
        returncode, log = run_in_pty(argv, env)
    else:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        returncode, log = done.returncode, done.stdout + done.stderr
    wall, cpu = time.perf_counter() - started, children_cpu() - before
    if returncode != 0:
        sys.exit(f"{path} failed (exit {returncode}):\n{log.decode(errors='replace')[-3000:]}")
    figures = json.loads(figures_file.read_text())
    figures_file.unlink()
    return {"wall": wall, "call": figures["call"], "cpu": cpu, "log": len(log)}


def children_cpu() -> float:
    """User + system seconds of this process's waited-for children: the one child of a run, as runs
    go one at a time. Other load moves it less than the wall clock (not at all is too much to hope)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_in_pty(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run with stderr on a 120x40 pseudo-terminal, as at a shell, reading what it draws as it comes:
    a full pty buffer would stall the child."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal
    )
    os.close(terminal)
    drawn: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = process.communicate()
    reader.join(timeout=5)
    os.close(controller)
    return process.returncode, stdout + b"".join(drawn)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="the repo's total size, MiB")
    parser.add_argument("--shards", type=int, default=4, help="how many safetensors files")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--with-bar", action="store_true", help="also run the CLI under a pty, bar drawn")
    parser.add_argument("--workdir", type=Path, default=None, help="where the repo and caches go [$TMPDIR]")
    args = parser.parse_args()
    if args.rounds < 1 or args.size_mb < 8 or args.shards < 1:
        parser.error("--rounds >= 1, --size-mb >= 8, --shards >= 1")
    size = args.size_mb << 20
    base = args.workdir or Path(tempfile.gettempdir())
    # The served repo, one cache at a time (each is deleted after its run) and pull's own margin.
    free, needed = shutil.disk_usage(base).free, 2 * size + (512 << 20)
    if needed > free:
        sys.exit(
            f"{base} has {free >> 20} MiB free and a {args.size_mb} MiB repo needs {needed >> 20} MiB: "
            f"use --size-mb {max((free - (512 << 20)) // 2 >> 20, 0)} or less, or --workdir elsewhere"
        )
    # hf2 runs hf's very code again: its ratio to hf is this machine's noise floor for the others.
    paths = ["hf", "hf2", "lib", "cli"] + (["bar"] if args.with_bar else [])
    work = Path(tempfile.mkdtemp(prefix="nimctl-bench-pull-", dir=base))
    hub = HubEmulation()
    try:
        files = make_repo(work / "repo", size, args.shards)
        hub.add_revision(REPO, work / "repo")
        env = child_env(hub.start(), work / "hf-home")
        big = sorted(n for n in files if n.endswith(".safetensors"))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"machine: {os.cpu_count()} cores, load average {load} (other jobs make figures noisy); "
            f"repo, caches and emulation on {base}, page cache warm"
        )
        print(
            f"repo {REPO}: {sum(files.values()) / 1e6:.0f} MB in {len(files)} files "
            f"({len(big)} x {files[big[-1]] / 1e6:.0f} MB safetensors, {len(SMALL_FILES)} small json)"
        )
        drawn = "cli: no bar, stderr a pipe" + ("; bar: the same, Rich bar on a pty" if args.with_bar else "")
        print(f"paths: {', '.join(paths)} ({drawn})", flush=True)
        results: dict[str, list[dict[str, float]]] = {path: [] for path in paths}
        for index in range(args.rounds + 1):  # round 0 warms the page cache and the .pyc files, not counted
            for path in paths if index % 2 == 0 else paths[::-1]:
                cache = work / f"cache-{path}-{index}"
                figures = run_child(path, cache, env)
                shutil.rmtree(cache, ignore_errors=True)
                if index > 0:
                    results[path].append(figures)
            print(f"round {index or 'warm-up'} done", file=sys.stderr)
        report(results, sum(files.values()), args.rounds)
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, list[dict[str, float]]], total: int, rounds: int) -> None:
    def rates(path: str, key: str) -> list[float]:
        return [total / r[key] / 1e6 for r in results[path]]

    def paired(path: str, key: str) -> float:
        """The median of each round's ratio to hf's run of the same round: the machine's drift between
        rounds (other jobs come and go) cancels, where a ratio of two medians keeps it."""
        return statistics.median(h[key] / r[key] for h, r in zip(results["hf"], results[path], strict=True))

    print(f"\nmedians over {rounds} rounds (MB/s, 1 MB = 1e6 bytes; [slowest-fastest round])")
    head = f"{'wall MB/s':>19} {'call MB/s':>19} {'CPU s':>6}"
    print(f"{'path':>5} {head}  nimctl/hf: {'wall':>6} {'call':>6} {'CPU':>6}")
    verdicts = []
    for path in results:
        cells = []
        for key in ("wall", "call"):
            found = rates(path, key)
            cells.append(f"{statistics.median(found):>7.0f} [{min(found):>4.0f}-{max(found):>4.0f}]")
        cpu = statistics.median(r["cpu"] for r in results[path])
        line = f"{path:>5} {cells[0]:>19} {cells[1]:>19} {cpu:>6.2f}"
        if path != "hf":
            ratios = (paired(path, "wall"), paired(path, "call"))
            cpu_ratio = 1 / paired(path, "cpu")  # more CPU than hf reads above 1
            line += f"  {'':>10} {ratios[0]:>6.3f} {ratios[1]:>6.3f} {cpu_ratio:>6.3f}"
            if path in CONTROL:
                line += "  (control: hf against itself)"
            else:
                verdicts.append(f"{path}: {'PASS' if min(ratios) >= TARGET else 'MISS'}")
        print(line)
    if "bar" in results:  # proof that the bar was drawn: what reached the pty
        print(
            f"bar: {statistics.median(r['log'] for r in results['bar']) / 1e3:.0f} kB drawn on the pty a run"
        )
    print(f"throughput ratio target >= {TARGET} (wall and call; CPU is the child's user+sys, for the why)")
    print(f"verdict: {'  '.join(verdicts)}")


if __name__ == "__main__":
    main()
