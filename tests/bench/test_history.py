"""The history file: append, list, find by id or prefix, unknown ids; comparing two runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nimctl.bench.compare import METRICS, compare_runs
from nimctl.bench.history import append_run, history_path, list_runs, load_run
from nimctl.errors import UsageError


def level(
    concurrency: int, rps: float, ttft_p50: float, errors: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "requests_per_s": rps,
        "output_tokens_per_s": rps * 10,
        "goodput": None,
        "ttft_ms": {"mean": ttft_p50, "p50": ttft_p50, "p90": None, "p99": None, "count": 4},
        "errors": errors or {},
    }


def test_append_and_list(state_dir: Path) -> None:
    assert history_path() == state_dir / "bench" / "history.jsonl"
    assert list_runs() == []
    first = append_run({"model": "tiny-vlm", "results": {"levels": [level(1, 2.0, 100.0)]}})
    second = append_run({"model": "tiny-llm"})
    assert list(first)[:3] == ["id", "time", "model"] and len(first["id"]) == 8
    assert [run["model"] for run in list_runs()] == ["tiny-vlm", "tiny-llm"]
    assert list_runs()[0] == first
    lines = history_path().read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1]) == second


def test_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    append_run({"n": 1}, path=path)
    with path.open("a") as file:
        file.write('{"id": "dead", "n": ')  # a run killed while writing
    assert [run["n"] for run in list_runs(path=path)] == [1]


def test_load_by_id_or_unique_prefix(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    runs = [{"id": run_id, "time": "t"} for run_id in ("ab12cd34", "ab99ef00", "c0ffee11")]
    path.write_text("".join(json.dumps(run) + "\n" for run in runs))
    assert load_run("ab12cd34", path=path)["id"] == "ab12cd34"
    assert load_run("C0F", path=path)["id"] == "c0ffee11"
    with pytest.raises(UsageError, match="ambiguous: it starts ab12cd34, ab99ef00"):
        load_run("ab", path=path)
    with pytest.raises(
        UsageError, match="unknown run id 'ff'; the latest runs: c0ffee11, ab99ef00, ab12cd34"
    ) as caught:
        load_run("ff", path=path)
    assert caught.value.hint == "see the runs with `nimctl bench history`"
    with pytest.raises(UsageError, match="no run is recorded yet"):
        load_run("ab", path=tmp_path / "none.jsonl")


def test_compare_level_by_level() -> None:
    run_a = {"results": {"levels": [level(1, 2.0, 100.0), level(4, 6.0, 200.0)]}}
    run_b = {
        "results": {"levels": [level(1, 3.0, 50.0), level(16, 9.0, 400.0, {"timeout": 2, "http_5xx": 1})]}
    }
    rows = compare_runs(run_a, run_b)
    assert [row.concurrency for row in rows] == [1] * len(METRICS) + [4] * len(METRICS) + [16] * len(METRICS)
    by_key = {(row.concurrency, row.metric): row for row in rows}
    rps = by_key[1, "requests_per_s"]
    assert (rps.a, rps.b, rps.ratio, rps.higher_is_better) == (2.0, 3.0, 1.5, True)
    ttft = by_key[1, "ttft_ms.p50"]
    assert (ttft.a, ttft.b, ttft.ratio, ttft.higher_is_better) == (100.0, 50.0, 0.5, False)
    assert by_key[1, "ttft_ms.p90"].ratio is None and by_key[1, "goodput_per_s"].a is None
    assert by_key[1, "errors"].to_dict() == {
        "concurrency": 1,
        "metric": "errors",
        "a": 0.0,
        "b": 0.0,
        "ratio": None,
        "higher_is_better": False,
    }
    assert (by_key[4, "requests_per_s"].a, by_key[4, "requests_per_s"].b) == (6.0, None)
    assert by_key[16, "errors"].b == 3.0
    assert compare_runs({}, {"results": "junk"}) == []
