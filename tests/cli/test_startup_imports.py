"""What the hot commands import, and the lazy registration that keeps them quick.

`nimctl --help`, `health` and `tokenize` run many times a day and in CI loops: they must not
pull in the docker SDK, NVML, the server, torch or the chat session's prompt_toolkit.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from nimctl.cli.main import COMMAND_MODULES, app, build_app

SERVE_COMMAND = ("nimctl.server", "nimctl.server.command")
HEAVY = ("docker", "pynvml", "nimctl.server", "nimctl.runtime.docker_runtime", "prompt_toolkit", "torch", "vllm")

PROBE = """
import json, sys
sys.argv = ["nimctl", *json.loads(sys.argv[1])]
from nimctl.cli.main import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_loaded_by(args: list[str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin", "NIMCTL_STATE_DIR": "/nonexistent/nimctl-state"},
        timeout=60,
    )
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["health", "--url", "URL"],
        ["tokenize", "hello", "--url", "URL"],
        ["health"],  # no URL: the running-instance lookup reads the (empty) state folder first
    ],
)
def test_hot_paths_import_nothing_heavy(args: list[str], closed_url: str) -> None:
    loaded = modules_loaded_by([closed_url if arg == "URL" else arg for arg in args])
    # nim-serve's own command module registers `nimctl serve` (Typer and shlex); the server it starts is not imported.
    heavy = sorted(name for name in loaded if name.startswith(HEAVY) and name not in SERVE_COMMAND)
    if args == ["health"]:
        # Without a URL the Docker daemon may be asked (its socket, through httpx), not the SDK.
        heavy = [name for name in heavy if not name.startswith("nimctl.runtime")]
    assert heavy == []


def test_the_command_table_is_what_the_modules_register() -> None:
    full = typer.main.get_command(app)
    assert list(full.commands) == list(COMMAND_MODULES)  # type: ignore[attr-defined]
    for name, module in COMMAND_MODULES.items():
        registered = typer.main.get_command(build_app([name])).commands  # type: ignore[attr-defined]
        assert name in registered
        assert {COMMAND_MODULES[other] for other in registered} == {module}


@pytest.mark.parametrize("argv", [[], ["--help"], ["--debug"], ["no-such-command"]])
def test_no_command_or_an_unknown_one_gets_them_all(argv: list[str]) -> None:
    commands = typer.main.get_command(build_app(argv)).commands  # type: ignore[attr-defined]
    assert list(commands) == list(COMMAND_MODULES)
