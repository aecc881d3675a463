"""`nimctl serve` / `nim-serve` as a command: dry run, bad configuration, JSONL logs."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from nimctl.server.logs import JsonlFormatter


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"NIM_CACHE_PATH": str(tmp_path), "NIM_MODEL_PATH": "builtin://tiny-vlm", "NIMCTL_ASSUME_GPUS": ""}


def test_dry_run_prints_the_resolved_configuration_and_engine_command(env: dict[str, str]) -> None:
    env["NIM_PASSTHROUGH_ARGS"] = "--max-num-seqs 4"
    result = CliRunner().invoke(app, ["serve", "--dry-run", "--max-model-len", "1024"], env=env)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["profile_name"] == "vllm-fp32-tp1-pp1-cpu"
    assert plan["served_model_name"] == "tiny-vlm"
    command = plan["engine_command"]
    assert command[command.index("--model") + 1].endswith("builtin/tiny-vlm")
    assert command[-4:] == ["--max-num-seqs", "4", "--max-model-len", "1024"]  # passthrough, then CLI
    assert shlex.split(plan["engine_command_line"]) == command
    assert plan["engine_env"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    # The engine's port is picked at launch: the dry run says so rather than show a stale one.
    assert plan["engine_port"] is None
    assert command[command.index("--port") + 1] == "<free-port-at-launch>"
    assert "NIMCTL_ENGINE_PORT" in plan["engine_port_note"]


def test_dry_run_shows_a_fixed_engine_port(env: dict[str, str]) -> None:
    env["NIMCTL_ENGINE_PORT"] = "18123"
    result = CliRunner().invoke(app, ["serve", "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["engine_port"] == 18123 and "engine_port_note" not in plan
    assert plan["engine_command"][plan["engine_command"].index("--port") + 1] == "18123"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NIM_SERVER_PORT", "eighty"),
        ("NIM_MODEL_PATH", "s3://bucket/model"),
        ("NIM_MODEL_PATH", "builtin://typo"),
        ("NIM_MODEL_PATH", "/no/such/model/folder"),
        ("NIM_MODEL_PROFILE", "no-such"),
        ("NIM_PASSTHROUGH_ARGS", "--port 9000"),
    ],
)
def test_bad_configuration_is_one_error_line(env: dict[str, str], variable: str, value: str) -> None:
    env[variable] = value
    result = CliRunner().invoke(app, ["serve", "--dry-run"], env=env)
    assert result.exit_code in (2, 8), result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    if variable != "NIM_MODEL_PROFILE":  # the profile selection's own words name the profile instead
        assert variable in errors[0]
    assert "Traceback" not in result.output


def test_engine_arguments_after_the_command_may_not_set_the_fronts_flags(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["serve", "--dry-run", "--served-model-name=other"], env=env)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "arguments after nim-serve" in errors[0] and "NIM_SERVED_MODEL_NAME" in errors[0]


def test_jsonl_lines_carry_nims_keys() -> None:
    record = logging.LogRecord(
        "nimctl.server", logging.WARNING, "/x/app.py", 12, "engine %s", ("gone",), None
    )
    line = json.loads(JsonlFormatter().format(record))
    assert line["level"] == "WARNING"
    assert line["message"] == "engine gone"
    assert (line["file_name"], line["line_number"]) == ("/x/app.py", 12)
    assert line["time"].endswith("+00:00")
