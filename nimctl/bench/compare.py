"""Two recorded runs side by side, level by level (matched by concurrency), with ratios.

A pure function of the two history records: the CLI prints the rows. ``ratio`` is B over A, so
above 1 means B is higher: better for the rates, worse for the latencies (``higher_is_better``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (name in the row, path in a level's dict, higher is better)
METRICS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("requests_per_s", ("requests_per_s",), True),
    ("output_tokens_per_s", ("output_tokens_per_s",), True),
    ("goodput_per_s", ("goodput", "requests_per_s"), True),
    ("ttft_ms.mean", ("ttft_ms", "mean"), False),
    ("ttft_ms.p50", ("ttft_ms", "p50"), False),
    ("ttft_ms.p90", ("ttft_ms", "p90"), False),
    ("ttft_ms.p99", ("ttft_ms", "p99"), False),
    ("itl_ms.mean", ("itl_ms", "mean"), False),
    ("itl_ms.p50", ("itl_ms", "p50"), False),
    ("itl_ms.p90", ("itl_ms", "p90"), False),
    ("itl_ms.p99", ("itl_ms", "p99"), False),
    ("e2e_ms.mean", ("e2e_ms", "mean"), False),
    ("e2e_ms.p50", ("e2e_ms", "p50"), False),
    ("e2e_ms.p90", ("e2e_ms", "p90"), False),
    ("e2e_ms.p99", ("e2e_ms", "p99"), False),
    ("errors", ("errors",), False),
)


@dataclass(frozen=True)
class CompareRow:
    concurrency: int
    metric: str
    a: float | None
    b: float | None
    ratio: float | None  # b / a; None when either is missing or a is 0
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "metric": self.metric,
            "a": self.a,
            "b": self.b,
            "ratio": self.ratio,
            "higher_is_better": self.higher_is_better,
        }


def levels_of(run: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """A history record's levels by concurrency (its ``results`` is a sweep's ``to_dict()``)."""
    results = run.get("results")
    levels = results.get("levels") if isinstance(results, dict) else None
    found: dict[int, dict[str, Any]] = {}
    for level in levels if isinstance(levels, list) else ():
        if isinstance(level, dict) and isinstance(level.get("concurrency"), int):
            found[level["concurrency"]] = level
    return found


def compare_runs(run_a: dict[str, Any], run_b: dict[str, Any]) -> list[CompareRow]:
    """One row per metric per concurrency of either run, in ascending concurrency; a level only one
    run has gets rows with the other side None."""
    levels_a, levels_b = levels_of(run_a), levels_of(run_b)
    rows = []
    for concurrency in sorted(levels_a.keys() | levels_b.keys()):
        for name, path, higher in METRICS:
            a = _value(levels_a.get(concurrency), path)
            b = _value(levels_b.get(concurrency), path)
            ratio = b / a if a is not None and b is not None and a != 0 else None
            rows.append(CompareRow(concurrency, name, a, b, ratio, higher))
    return rows


def _value(level: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    value: Any = level
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, dict):  # errors by kind: their total
        value = sum(count for count in value.values() if isinstance(count, int | float))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
