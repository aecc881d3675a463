"""The exit codes: the README's table is nimctl's, and the codes no exception carries work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from nimctl.errors import EXIT_BROKEN_PIPE, EXIT_CODES, EXIT_UNREACHABLE
from tests.cli.conftest import nimctl

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_exit_codes() -> dict[int, str]:
    section = README.read_text().split("## Output and exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M)}


def test_readme_table_is_the_code_table() -> None:
    assert readme_exit_codes() == EXIT_CODES


def test_debug_shows_the_traceback_and_keeps_the_code(closed_url: str) -> None:
    plain = nimctl("health", "--url", closed_url)
    debug = nimctl("--debug", "health", "--url", closed_url)
    assert plain.exit_code == debug.exit_code == EXIT_UNREACHABLE
    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert "Error: cannot reach the server" in debug.stderr


def test_version() -> None:
    from nimctl import __version__

    result = nimctl("--version")
    assert result.exit_code == 0 and result.stdout == f"nimctl {__version__}\n"


def test_shell_completion_through_the_console_script() -> None:
    script = Path(sys.executable).with_name("nimctl")
    env = {"PATH": "/usr/bin:/bin", "_NIMCTL_COMPLETE": "complete_bash"}
    words = {"COMP_WORDS": "nimctl he", "COMP_CWORD": "1"}
    completed = subprocess.run([script], env={**env, **words}, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["health"]
    words = {"COMP_WORDS": "nimctl profiles ", "COMP_CWORD": "2"}
    completed = subprocess.run([script], env={**env, **words}, capture_output=True, text=True, timeout=60)
    assert {"list", "show", "select"} <= set(completed.stdout.split())
    source = subprocess.run(
        [script], env={**env, "_NIMCTL_COMPLETE": "source_bash"}, capture_output=True, text=True, timeout=60
    )
    assert "complete " in source.stdout and "_nimctl_completion" in source.stdout


def test_a_closed_pipe_is_quiet_and_exits_141() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nimctl", "gpus", "--catalog", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader leaves before nimctl has written anything
    stderr = process.stderr.read().decode()
    assert process.wait(60) == EXIT_BROKEN_PIPE, stderr
    assert stderr == ""
