"""Every failure gives its one-line message, a hint, and its documented exit code.

These need no engine: a closed port, a bad URL, the real front while its engine is still
loading, and a stand-in server that answers 500.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nimctl.errors import (
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from tests.cli.conftest import error_line, nimctl


@pytest.mark.parametrize(
    "args",
    [
        ["health"],
        ["health", "--live"],
        ["chat", "hello", "--model", "m"],
        ["tokenize", "hello"],
        ["models", "--format", "json"],
        ["metrics"],
    ],
)
def test_server_down(closed_url: str, args: list[str]) -> None:
    result = nimctl(*args, "--url", closed_url)
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    assert error_line(result).startswith(f"Error: cannot reach the server at {closed_url}")
    assert "Hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_server_down_via_environment(closed_url: str) -> None:
    result = nimctl("health", env={"NIMCTL_URL": closed_url})
    assert result.exit_code == EXIT_UNREACHABLE
    assert closed_url in result.stderr


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://example.com", "http://"])
def test_malformed_url_is_a_usage_error(url: str) -> None:
    result = nimctl("health", "--url", url)
    assert result.exit_code == EXIT_USAGE
    assert error_line(result).startswith("Error: invalid server URL")


def test_not_ready_yet(loading_front: str) -> None:
    result = nimctl("health", "--url", loading_front)
    assert result.exit_code == EXIT_NOT_READY
    assert "live:    yes" in result.stdout and "ready:   no" in result.stdout
    assert "model is loading" in error_line(result)


def test_not_ready_json(loading_front: str) -> None:
    import json

    result = nimctl("health", "--url", loading_front, "--format", "json")
    assert result.exit_code == EXIT_NOT_READY
    report = json.loads(result.stdout)
    assert report == {"url": loading_front, "live": True, "ready": False, "message": report["message"]}
    assert "model is loading" in report["message"]


def test_live_only_passes_while_loading(loading_front: str) -> None:
    result = nimctl("health", "--live", "--url", loading_front)
    assert result.exit_code == EXIT_OK
    assert "live:    yes" in result.stdout


def test_wait_times_out_while_loading(loading_front: str) -> None:
    result = nimctl("health", "--wait", "--timeout", "1", "--interval", "0.2", "--url", loading_front)
    assert result.exit_code == EXIT_TIMEOUT
    assert "was not ready after 1 s; last state: live, not ready" in error_line(result)
    assert result.stdout == ""  # piped: no spinner, no progress lines


def test_wait_with_zero_timeout_probes_once_and_does_not_wait(loading_front: str) -> None:
    result = nimctl("health", "--wait", "--timeout", "0", "--url", loading_front)
    assert result.exit_code == EXIT_TIMEOUT
    assert "was not ready after 0 s; last state: live, not ready" in error_line(result)


def test_zero_timeout_without_wait_is_a_usage_error(loading_front: str) -> None:
    result = nimctl("health", "--timeout", "0", "--url", loading_front)
    assert result.exit_code == EXIT_USAGE
    assert error_line(result) == "Error: --timeout 0 leaves the probe no time"


def test_wait_times_out_when_down(closed_url: str) -> None:
    result = nimctl("health", "--wait", "--timeout", "0.5", "--interval", "0.1", "--url", closed_url)
    assert result.exit_code == EXIT_TIMEOUT
    assert "last state: unreachable" in error_line(result)


@pytest.mark.parametrize("args", [["chat", "hello", "--model", "m"], ["tokenize", "hello"], ["render", "hi"]])
def test_inference_while_loading_is_not_ready(loading_front: str, args: list[str]) -> None:
    result = nimctl(*args, "--url", loading_front)
    assert result.exit_code == EXIT_NOT_READY
    assert error_line(result) == "Error: the server is not ready: model is loading in the engine"
    assert "nimctl health --wait" in result.stderr


def test_server_error_5xx(failing_server: str) -> None:
    result = nimctl("metadata", "--url", failing_server)
    assert result.exit_code == EXIT_SERVER_ERROR
    assert error_line(result) == "Error: metadata exploded"


def test_bad_image_path_is_refused_before_sending(closed_url: str, tmp_path: Path) -> None:
    # The server is down: a usage error (2) rather than unreachable (3) proves nothing was sent.
    result = nimctl("chat", "hi", "--image", str(tmp_path / "missing.png"), "--url", closed_url)
    assert result.exit_code == EXIT_USAGE
    assert error_line(result) == f"Error: image not found: {tmp_path / 'missing.png'}"


def test_not_an_image_is_refused(closed_url: str, tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("hello")
    result = nimctl("chat", "hi", "--image", str(fake), "--url", closed_url)
    assert result.exit_code == EXIT_USAGE
    assert "not an image type" in error_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "top_k"], "Error: --param 'top_k' is not KEY=VALUE"),
        (["--param", "=3"], "Error: --param '=3' is not KEY=VALUE"),
        (["--param", "stream=false"], "Error: --param cannot set 'stream': nimctl chat fills it itself"),
        (["--param", "messages=[]"], "Error: --param cannot set 'messages': nimctl chat fills it itself"),
        (["--max-tokens", "4", "--param", "max_tokens=8"], "Error: --param max_tokens repeats --max-tokens"),
        (
            ["--param", "top_k=1", "--param", "top_k=2"],
            "Error: --param top_k repeats an earlier --param top_k",
        ),
        (["--param", "top_k="], "Error: --param 'top_k=' is not KEY=VALUE"),
        (["--max-tokens", "4", "--param", "max-tokens=8"], "Error: --param max_tokens repeats --max-tokens"),
        (["--param", "temperature=NaN"], "Error: --param temperature: NaN is not a finite number"),
        (["--param", "temperature=1e999"], "Error: --param temperature: 1e999 is not a finite number"),
    ],
)
def test_bad_param_is_refused_before_sending(closed_url: str, args: list[str], message: str) -> None:
    result = nimctl("chat", "hi", *args, "--url", closed_url)
    assert result.exit_code == EXIT_USAGE, result.stderr
    assert error_line(result) == message
    assert "Hint:" in result.stderr


def test_empty_prompt_is_a_usage_error(closed_url: str) -> None:
    result = nimctl("chat", "--url", closed_url, input="")
    assert result.exit_code == EXIT_USAGE
    assert error_line(result) == "Error: the prompt is empty"


def test_bad_argument_type_is_a_usage_error(closed_url: str) -> None:
    result = nimctl("detokenize", "12", "not-a-number", "--url", closed_url)
    assert result.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["health", "--bogus"], "Error: No such option: --bogus", "Hint: see 'nimctl health --help'"),
        (["--bogus"], "Error: No such option: --bogus", "Hint: see 'nimctl --help'"),
        (["no-such-command"], "Error: No such command 'no-such-command'.", "Hint: see 'nimctl --help'"),
        (["profiles", "nope"], "Error: No such command 'nope'.", "Hint: see 'nimctl profiles --help'"),
        (
            ["chat", "hi", "--max-tokens", "0"],
            "Error: Invalid value for '--max-tokens': Input should be greater than or equal to 1",
            "Hint: see 'nimctl chat --help'",
        ),
    ],
)
def test_a_bad_command_line_gets_error_and_hint_lines(args: list[str], message: str, hint: str) -> None:
    # Typer's own parsing errors look like nimctl's: no box, the same two lines, exit 2.
    result = nimctl(*args)
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.splitlines() == [message, hint]
    assert result.stdout == ""


def test_help_keeps_bracketed_text() -> None:
    # Rich markup would read "[env NIMCTL_URL; ...]" as a tag and drop it from the help.
    result = nimctl("health", "--help")
    assert result.exit_code == EXIT_OK
    text = " ".join(result.stdout.split())
    assert "[env NIMCTL_URL; default: the one running instance, else http://127.0.0.1:8000]" in text
    assert "[env NIMCTL_API_KEY]" in text


@pytest.mark.parametrize("command", ["manifest", "metrics"])
def test_raw_and_json_together_is_a_usage_error(command: str, closed_url: str) -> None:
    # Refused before anything is sent: the server is down, and the answer is 2, not 3.
    result = nimctl(command, "--raw", "--format", "json", "--url", closed_url)
    assert result.exit_code == EXIT_USAGE
    assert error_line(result) == "Error: --raw prints the server's text as it is, not JSON"


def test_a_usage_error_without_its_own_hint_points_at_the_help(tmp_path: Path) -> None:
    result = nimctl("stop", env={"NIMCTL_STATE_DIR": str(tmp_path)})
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.splitlines() == [
        "Error: give an instance NAME or --all (not both)",
        "Hint: see 'nimctl stop --help'",
    ]


def test_a_broken_manifest_points_at_the_format(tmp_path: Path) -> None:
    manifest = tmp_path / "broken.yaml"
    manifest.write_text("model: [\n")
    result = nimctl("profiles", "list", str(manifest))
    assert result.exit_code == EXIT_USAGE
    assert error_line(result).startswith(f"Error: {manifest}:2: YAML error")
    assert "Hint: docs/profiles.md describes the manifest format" in result.stderr


def _console_script(name: str, entry: str, *args: str) -> tuple[int, str]:
    """A console script (nim-serve, list-model-profiles): the installed one, else its entry point."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name(name)
    if script.exists():
        command = [str(script), *args]
    else:
        module, function = entry.split(":")
        code = f"import sys; sys.argv = {[name, *args]!r}; from {module} import {function}; {function}()"
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stderr


LIST_MODEL_PROFILES = "nimctl.cli.profiles:list_model_profiles_main"


@pytest.mark.parametrize(
    ("name", "entry", "args", "message"),
    [
        (
            "nim-serve",
            "nimctl.server.command:main",
            ["--dry-run=x"],
            "Error: Option '--dry-run' does not take a value.",
        ),
        ("list-model-profiles", LIST_MODEL_PROFILES, ["--gpus", "foo:x"], "Error: bad GPU spec 'foo:x'"),
        ("list-model-profiles", LIST_MODEL_PROFILES, ["--bogus"], "Error: No such option: --bogus"),
        (
            "download-to-cache",
            "nimctl.cli.nim_utilities:download_to_cache_main",
            ["--bogus"],
            "Error: No such option: --bogus",
        ),
        (
            "create-model-store",
            "nimctl.cli.nim_utilities:create_model_store_main",
            ["-m", "x"],
            "Error: Missing option '--profile' / '-p'.",
        ),
    ],
)
def test_console_scripts_report_errors_like_nimctl(
    name: str, entry: str, args: list[str], message: str
) -> None:
    code, stderr = _console_script(name, entry, *args)
    assert code == EXIT_USAGE, stderr
    lines = stderr.splitlines()
    assert lines[0].startswith(message) and lines[1] == f"Hint: see '{name} --help'"
    assert "Traceback" not in stderr
