"""How ``nimctl bench`` shows a run: the live view while it runs, then the tables.

On a terminal the live view is one Rich line per level (progress, the figures so far) redrawn
four times a second; in a pipe, and with ``--format json``, each finished level is one line on
stderr. The figures so far come from :func:`nimctl.bench.stats.running_stats`, computed when the
view is drawn, not per request: the sweep's event loop only appends to a list.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from nimctl.bench.events import (
    LevelFinished,
    LevelStarted,
    PromptsReady,
    RequestFinished,
    SweepStopped,
    WarmupFinished,
    WarmupStarted,
)

if TYPE_CHECKING:
    from rich.live import Live

    from nimctl.bench.compare import CompareRow
    from nimctl.bench.events import BenchEvent
    from nimctl.bench.generator import RequestResult
    from nimctl.bench.stats import LevelStats
    from nimctl.output import Output


RECENT = 1000  # requests the live figures are computed over


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def level_line(stats: LevelStats) -> str:
    """One level's figures in a line: what the pipe gets, and the live view draws."""
    errors = sum(stats.errors.values())
    line = (
        f"concurrency {stats.concurrency}: {stats.ok}/{stats.requests} ok, "
        f"{_rate(stats.requests_per_s)} req/s, {_rate(stats.output_tokens_per_s)} tok/s, "
        f"TTFT p50 {_ms(stats.ttft.p50)} ms, "
        f"ITL p50 {_ms(stats.itl.p50)} ms, latency p50 {_ms(stats.e2e.p50)} ms"
    )
    if stats.goodput_per_s is not None:
        line += f", goodput {_rate(stats.goodput_per_s)} req/s"
    if errors:
        line += ", errors " + ", ".join(f"{kind} {count}" for kind, count in sorted(stats.errors.items()))
    return line


class SweepView:
    """The ``on_event`` of a sweep (and ``status`` for the profile sweep's messages)."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.live: Live | None = None
        self.header = "preparing the prompts"
        self.level: LevelStarted | None = None
        self.level_started = 0.0
        self.results: list[RequestResult] = []

    def __enter__(self) -> SweepView:
        if self.out.interactive and not self.out.is_json:
            from rich.live import Live

            # Twice a second, over the latest RECENT requests: drawn in Rich's thread, the figures
            # take the GIL from the sweep's loop, whose chunk timestamps must not wait for them.
            self.live = Live(self, console=self.out.err, refresh_per_second=2, transient=True)
            self.live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(kind, exc, tb)
            self.live = None

    def _say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            self.out.info(line)

    def status(self, message: str) -> None:
        self.header = message
        self._say(message)

    def __call__(self, event: BenchEvent) -> None:
        if isinstance(event, RequestFinished):
            self.results.append(event.result)
        elif isinstance(event, LevelStarted):
            self.level, self.level_started, self.results = event, time.perf_counter(), []
            self.header = f"level {event.number}/{event.of}: concurrency {event.concurrency}"
        elif isinstance(event, LevelFinished):
            self.level = None
            self._say(level_line(event.stats))
        elif isinstance(event, PromptsReady):
            source = f"{event.input_tokens} tokens each" if event.input_tokens else "from the dataset"
            self.header = (
                f"prompts ready ({source}, {event.verified} counted by the server, seed {event.seed})"
            )
        elif isinstance(event, WarmupStarted):
            self.header = f"warm-up: {event.requests} requests at concurrency {event.concurrency}"
        elif isinstance(event, WarmupFinished):
            self._say(f"warm-up: {event.ok} ok, {event.failed} failed")
        elif isinstance(event, SweepStopped):
            self._say(event.message)

    def __rich__(self) -> Any:
        from rich.spinner import Spinner

        from nimctl.bench.stats import running_stats

        level = self.level
        if level is None:
            return Spinner("dots", self.header, style="cyan")
        results = self.results[-RECENT:]
        elapsed = time.perf_counter() - self.level_started
        if level.requests:
            done = f"{len(self.results)}/{level.requests} requests"
        else:
            done = f"{elapsed:.0f}/{level.duration_s:g} s, {len(self.results)} requests"
        text = f"{self.header}: {done}"
        if results:
            text += " | " + level_line(running_stats(level.concurrency, results, time.perf_counter()))
            if len(self.results) > RECENT:
                text += f" (the latest {RECENT})"
        return Spinner("dots", text, style="cyan")


# -- the tables -------------------------------------------------------------------------------
def _get(level: dict[str, Any], *path: str) -> Any:
    value: Any = level
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def print_run(out: Output, record: dict[str, Any]) -> None:
    results = record["results"]
    profile = record.get("profile") or {}
    out.text(
        f"run {record['id']}: {record['model']} at {record['target']['url']}"
        + (f", profile {profile['name']}" if profile.get("name") else "")
    )
    levels = results["levels"]
    goodput = any(level.get("goodput") for level in levels)
    columns = ["CONC", "OK/REQS", "REQ/S", "TOK/S", "TTFT p50/p90/p99 ms", "ITL p50/p90/p99 ms"]
    columns += ["LATENCY p50/p99 ms", *(["GOODPUT REQ/S"] if goodput else []), "ERRORS"]
    rows = []
    for level in levels:
        row = [
            str(level["concurrency"]) + ("" if level.get("complete", True) else " (cut)"),
            f"{level['ok']}/{level['requests']}",
            _rate(level["requests_per_s"]),
            _rate(level["output_tokens_per_s"]),
            "/".join(_ms(_get(level, "ttft_ms", q)) for q in ("p50", "p90", "p99")),
            "/".join(_ms(_get(level, "itl_ms", q)) for q in ("p50", "p90", "p99")),
            "/".join(_ms(_get(level, "e2e_ms", q)) for q in ("p50", "p99")),
        ]
        if goodput:
            row.append(_rate(_get(level, "goodput", "requests_per_s")))
        row.append(", ".join(f"{kind} {n}" for kind, n in sorted(level["errors"].items())) or "-")
        rows.append(row)
    out.table(columns, rows)
    servers = [level for level in levels if level.get("server")]
    if servers:
        out.table(
            ("CONC", "SERVER TTFT mean ms", "SERVER REQS", "KV CACHE peak", "WAITING peak"),
            [
                (
                    level["concurrency"],
                    _ms(_get(level, "server", "ttft_mean_ms")),
                    _get(level, "server", "ttft_count")
                    if _get(level, "server", "ttft_count") is not None
                    else "-",
                    _percent(_get(level, "server", "kv_cache_usage_peak")),
                    _count(_get(level, "server", "requests_waiting_peak")),
                )
                for level in servers
            ],
            title="the server's view (/v1/metrics)",
        )
    if results.get("failure"):
        out.warn(results["failure"])


def print_profiles(out: Output, records: list[dict[str, Any]]) -> None:
    """Each profile's run, then one table of them all by concurrency (ratios to the first)."""
    for record in records:
        print_run(out, record)
    first = {level["concurrency"]: level for level in records[0]["results"]["levels"]}
    rows = []
    for record in records:
        for level in record["results"]["levels"]:
            base = first.get(level["concurrency"], {}).get("output_tokens_per_s")
            mine = level["output_tokens_per_s"]
            rows.append(
                (
                    record["profile"].get("name") or record["id"],
                    level["concurrency"],
                    _rate(mine),
                    "-" if not base or mine is None else f"{mine / base:.2f}x",
                    _ms(_get(level, "ttft_ms", "p50")),
                    _ms(_get(level, "itl_ms", "p50")),
                )
            )
    out.table(("PROFILE", "CONC", "TOK/S", "vs FIRST", "TTFT p50 ms", "ITL p50 ms"), rows, title="profiles")


def print_history(out: Output, runs: list[dict[str, Any]], path: Path) -> None:
    if not runs:
        out.info(f"no runs recorded yet in {path} (nimctl bench records one)")
        return
    rows = []
    for run in runs:
        results = run.get("results") or {}
        levels = results.get("levels") or []
        best = max((level.get("output_tokens_per_s") or 0 for level in levels), default=0)
        state = "interrupted" if results.get("interrupted") else "failed" if results.get("failure") else "ok"
        rows.append(
            (
                run["id"],
                run.get("time", "-"),
                run.get("model", "-"),
                (run.get("profile") or {}).get("name") or "-",
                ",".join(str(level.get("concurrency")) for level in levels) or "-",
                _rate(best) if levels else "-",
                state,
            )
        )
    out.table(("ID", "TIME", "MODEL", "PROFILE", "LEVELS", "BEST TOK/S", "STATE"), rows)


def print_compare(out: Output, a: dict[str, Any], b: dict[str, Any], rows: list[CompareRow]) -> None:
    for side, run in (("A", a), ("B", b)):
        profile = (run.get("profile") or {}).get("name") or "-"
        out.text(f"{side}: {run['id']} {run.get('time', '')} {run.get('model', '-')} profile {profile}")
    table = []
    for row in rows:
        if row.a is None and row.b is None:
            continue
        verdict = ""
        if row.a is not None and row.b is not None and row.a != row.b:  # errors from 0: no ratio, a verdict
            verdict = "better" if (row.b > row.a) == row.higher_is_better else "worse"
        table.append(
            (
                row.concurrency,
                row.metric,
                _rate(row.a),
                _rate(row.b),
                "-" if row.ratio is None else f"{row.ratio:.2f}x",
                verdict,
            )
        )
    out.table(("CONC", "METRIC", "A", "B", "B/A", "B IS"), table)
