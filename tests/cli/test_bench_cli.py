"""``nimctl bench``, ``bench history`` and ``bench compare`` through CliRunner against the real server.

One short sweep (two levels, 16 tokens in, 8 out) is run twice against the session's tiny VLM;
the tests around it read what it printed and recorded. Failure paths use servers that fail.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nimctl.bench.record import without_userinfo
from nimctl.cli.main import app
from tests.bench.conftest import StandIn
from tests.server_process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["-c", "1,2", "-r", "3", "--input-tokens", "16", "--output-tokens", "8", "--warmup", "1"]


def bench(*args: str) -> Any:
    return CliRunner().invoke(app, ["bench", *args])


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("bench-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIMCTL_STATE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def two_runs(nim_server: ServerProcess, state: Path) -> list[dict[str, Any]]:
    """Two recorded runs of the same sweep, the first with a plot and an SLO."""
    plot = state / "bench.png"
    first = bench("--url", nim_server.url, *SWEEP, "--slo", "ttft=60s", "--plot", str(plot), "-f", "json")
    assert first.exit_code == 0, first.output
    second = bench("--url", nim_server.url, *SWEEP, "--seed", "7", "-f", "json")
    assert second.exit_code == 0, second.output
    return [json.loads(first.stdout), json.loads(second.stdout)]


@pytest.mark.engine
def test_a_two_level_sweep_is_well_formed_with_exact_tokens(two_runs: list[dict[str, Any]]) -> None:
    record = two_runs[0]
    assert record["model"] == "tiny-vlm" and len(record["profile"]["id"]) == 64
    assert "--enable-scale-out" in record["engine_args"]
    assert record["versions"]["nimctl"] and record["versions"]["server"]
    assert record["host"]["cpus"] >= 1 and isinstance(record["host"]["gpus"], list)
    results = record["results"]
    assert not results["interrupted"] and results["failure"] is None
    assert [level["concurrency"] for level in results["levels"]] == [1, 2]
    for level in results["levels"]:
        # The server's own usage: exactly the tokens asked for, in and out, for every request.
        assert (level["requests"], level["ok"], level["errors"]) == (3, 3, {})
        assert (level["input_tokens"], level["output_tokens"]) == (16 * 3, 8 * 3)
        assert level["token_mismatches"] == {"input": 0, "output": 0}
        assert level["goodput"]["met"] == 3
        assert 0 < level["ttft_ms"]["p50"] <= level["e2e_ms"]["p50"]
        assert level["server"]["ttft_count"] == 3
    assert two_runs[1]["results"]["workload"]["seed"] == 7


@pytest.mark.engine
def test_the_plot_is_a_png(two_runs: list[dict[str, Any]], state: Path) -> None:
    assert (state / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.engine
def test_history_lists_the_runs_and_compare_sets_them_side_by_side(two_runs: list[dict[str, Any]]) -> None:
    listed = bench("history", "-f", "json")
    assert listed.exit_code == 0, listed.output
    ids = [run["id"] for run in json.loads(listed.stdout)]
    a, b = (run["id"] for run in two_runs)
    assert ids[-2:] == [a, b]
    table = bench("history")
    assert a in table.stdout and "tiny-vlm" in table.stdout

    compared = bench("compare", a, b[:5], "-f", "json")
    assert compared.exit_code == 0, compared.output
    rows = json.loads(compared.stdout)["rows"]
    tps = [row for row in rows if row["metric"] == "output_tokens_per_s"]
    assert [row["concurrency"] for row in tps] == [1, 2]
    assert all(row["ratio"] == pytest.approx(row["b"] / row["a"]) for row in tps)
    shown = bench("compare", a, b)
    assert shown.exit_code == 0 and "B/A" in shown.stdout and "output_tokens_per_s" in shown.stdout


@pytest.mark.engine
def test_the_table_and_the_live_lines(nim_server: ServerProcess, state: Path) -> None:
    result = bench("--url", nim_server.url, *SWEEP, "--no-history", "--plot", "-")
    assert result.exit_code == 0, result.output
    assert "TTFT p50/p90/p99 ms" in result.stdout and "the server's view" in result.stdout
    # In a pipe, each finished level is one line on stderr.
    assert re.search(r"concurrency 2: 3/3 ok", result.stderr)


@pytest.mark.engine
def test_input_tokens_above_the_context_is_a_usage_error(nim_server: ServerProcess) -> None:
    result = bench("--url", nim_server.url, "-c", "1", "-r", "1", "--input-tokens", "5000", "--no-history")
    assert result.exit_code == 2
    assert "above the model's context" in result.stderr


@pytest.mark.engine
def test_the_json_keys_are_documented(two_runs: list[dict[str, Any]]) -> None:
    text = (ROOT / "docs" / "json.md").read_text()
    section = text[text.index("## `nimctl bench`") :]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {key for cell in first_cells for key in re.findall(r"`([a-z_0-9.]+)`", cell)}
    record = two_runs[0]
    level = record["results"]["levels"][0]
    for key in [
        *record,
        *(f"results.{key}" for key in record["results"]),
        *(f"level.{key}" for key in level),
    ]:
        assert key in documented, f"{key} is not in docs/json.md"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "0"], "each level needs 1 or more"),
        (["-c", "1,x"], "is not a whole number"),
        (["--slo", "ttft=fast"], "--slo"),
        (["--plot", "out.jpg"], "does not end in .png"),
        (["--requests", "4", "--duration", "5"], "not both"),
        (["--no-stream", "--slo", "ttft=1s"], "need streamed answers"),
        # Read before the server is asked (which is not there): a usage error, not "unreachable".
        (["--dataset", "/nonexistent.jsonl"], "no such file"),
        (["--dataset", "/dev/zero"], "not a regular file"),
    ],
)
def test_bad_options_are_one_line_usage_errors(args: list[str], message: str) -> None:
    result = bench("--url", "http://127.0.0.1:9", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output


def test_an_unreachable_url_exits_3() -> None:
    result = bench("--url", f"http://127.0.0.1:{free_port()}", "-c", "1", "-r", "1", "--no-history")
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("Error: ")


def test_an_unknown_run_id_exits_2(state: Path) -> None:
    result = bench("compare", "zzzz0000", "yyyy1111")
    assert result.exit_code == 2
    assert "unknown run id" in result.stderr


# -- a server that dies, and Ctrl-C: nimctl bench as a process, against the stand-in server --------
def bench_process(url: str, state: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NIMCTL_STATE_DIR": str(state), "NIMCTL_URL": url}
    command = [sys.executable, "-m", "nimctl", "bench", "--input-tokens", "8", "--output-tokens", "4", *args]
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_line(process: subprocess.Popen[str], pattern: str, lines: list[str]) -> None:
    """Read stderr until a line matches (each finished level is one line there, in a pipe)."""
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if re.search(pattern, line):
            return
    pytest.fail(f"no line matched {pattern!r}: {''.join(lines)}")


@pytest.fixture
def server() -> Iterator[StandIn]:
    started = StandIn("--ttft", "0.02", "--itl", "0.02")
    yield started
    started.kill()


def test_a_server_killed_mid_sweep_counts_errors_and_exits_cleanly(server: StandIn, tmp_path: Path) -> None:
    # The first level is short (concurrency 4), the second long (one at a time, about 3 s): the kill
    # lands in it even on a loaded machine, and the third finds no server.
    process = bench_process(server.url, tmp_path, "-c", "4,1,2", "-r", "40", "--request-timeout", "5")
    lines: list[str] = []
    wait_for_line(process, r"^concurrency 4: 40/40 ok", lines)
    server.kill()
    out, err = process.communicate(timeout=60)
    err = "".join(lines) + err
    assert process.returncode == 3, err  # every request of a level failed to connect: as unreachable
    assert "Traceback" not in err and "Error: every request of concurrency" in err
    assert re.search(r"^4 +40/40", out, flags=re.MULTILINE)  # the table of what was measured
    record = json.loads((tmp_path / "bench" / "history.jsonl").read_text().splitlines()[-1])
    levels = record["results"]["levels"]
    assert record["results"]["failure_kind"] == "connection" and levels[0]["ok"] == 40
    assert sum(level["errors"].get("connection", 0) for level in levels[1:]) > 0


def test_ctrl_c_prints_and_records_what_was_measured(server: StandIn, tmp_path: Path) -> None:
    process = bench_process(server.url, tmp_path, "-c", "4,1", "-r", "40")  # a short level, a long one
    lines: list[str] = []
    wait_for_line(process, r"^concurrency 4: 40/40 ok", lines)
    process.send_signal(signal.SIGINT)  # in the second level
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(lines) + err
    assert "interrupted" in err and "Traceback" not in err
    assert re.search(r"^4 +40/40", out, flags=re.MULTILINE)  # what was measured is printed
    record = json.loads((tmp_path / "bench" / "history.jsonl").read_text().splitlines()[-1])
    assert record["results"]["interrupted"] and record["results"]["levels"][0]["complete"]


@pytest.mark.engine
def test_profiles_all_benches_the_one_cpu_profile_with_the_local_runtime(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    result = bench(
        "tiny-vlm",
        "--profiles",
        "all",
        "--runtime",
        "local",
        "--cache",
        str(model_cache),
        *SWEEP,
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert "only one profile can run on this machine: vllm-fp32-tp1-pp1-cpu" in result.stderr
    [record] = json.loads(result.stdout)
    assert record["profile"]["name"] == "vllm-fp32-tp1-pp1-cpu" and record["target"]["instance"]
    assert [level["ok"] for level in record["results"]["levels"]] == [3, 3]
    assert record["versions"]["server"]
    # The instance it started is stopped and removed.
    listed = CliRunner().invoke(app, ["ps", "-a", "-f", "json"])
    assert json.loads(listed.stdout) == [], listed.output


def test_a_history_that_cannot_be_written_still_prints_the_figures(server: StandIn, tmp_path: Path) -> None:
    state = tmp_path / "a-file"
    state.write_text("")
    process = bench_process(server.url, state, "-c", "2", "-r", "4", "-f", "json")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "not recorded in the history" in err
    assert json.loads(out)["results"]["levels"][0]["ok"] == 4


def test_a_urls_credentials_are_not_recorded() -> None:
    assert without_userinfo("https://user:s3cret@gpu-box:8443/v1") == "https://gpu-box:8443/v1"
    assert without_userinfo("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
