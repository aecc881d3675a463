"""`nimctl run --runtime local` end to end: the real nim-serve and vLLM CPU engine as host processes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from tests.images import image_question

pytestmark = pytest.mark.engine

NAME = "nimctl-e2e-local"


def test_local_instance_lifecycle(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = tmp_path / "state"
    env = {"NIMCTL_STATE_DIR": str(state), "NIMCTL_ASSUME_GPUS": "none", "NO_COLOR": "1"}

    def nimctl(*argv: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, list(argv), env=env)
        return result.exit_code, result.stdout, result.stderr

    cache = tmp_path_factory.mktemp("local-cache")
    code, out, err = nimctl(
        "run", "tiny-vlm", "-d", "--runtime", "local", "--name", NAME, "--port", str(port),
        "--cache", str(cache), "--timeout", "900",
    )  # fmt: skip
    try:
        assert code == 0, err
        url = f"http://127.0.0.1:{port}"
        assert f"tiny-vlm is ready at {url}" in out

        code, out, _ = nimctl("ps", "--format", "json")
        [row] = [row for row in json.loads(out) if row["name"] == NAME]
        assert row["runtime"] == "local" and row["state"] == "running" and row["ready"] is True
        # The id is the launcher's; nim-serve runs under it and vLLM under nim-serve, in a
        # session of its own (so the launcher's process group does not reach it).
        launcher = psutil.Process(int(row["id"]))
        tree = [launcher, *launcher.children(recursive=True)]
        commands = [" ".join(process.cmdline()) for process in tree]
        assert any("nim-serve" in c or "nimctl.server" in c for c in commands), commands
        engines = [
            p for p, c in zip(tree, commands, strict=True) if "vllm.entrypoints.openai.api_server" in c
        ]
        assert engines and os.getsid(engines[0].pid) != os.getsid(launcher.pid), commands

        from openai import OpenAI

        key = (state / "credentials" / NAME / "api-keys").read_text().strip()  # run made one for it
        client = OpenAI(base_url=url + "/v1", api_key=key, timeout=300)
        reply = client.chat.completions.create(model="tiny-vlm", max_tokens=4, messages=image_question())  # type: ignore[arg-type]
        assert reply.usage is not None and reply.usage.completion_tokens > 0

        code, out, _ = nimctl("logs", NAME)
        assert code == 0 and "engine started" in out and f"nim-serve on 127.0.0.1:{port}" in out
        assert (cache / "builtin" / "tiny-vlm").is_dir(), "the model was not generated in --cache"
    finally:
        code, out, err = nimctl("stop", NAME)
    assert code == 0, err
    assert out.strip() == f"{NAME}: stopped and removed"
    assert not (state / "instances" / NAME).exists()
    survivors = [" ".join(p.cmdline()) for p in tree if _alive(p)]
    assert survivors == [], f"outlived nimctl stop: {survivors}"


def _alive(process: psutil.Process) -> bool:
    try:  # is_running also checks the start time: a reused pid is not the process
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
