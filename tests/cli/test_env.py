"""``nimctl run --runtime local`` end to end with its generated key, and ``nimctl env``.

The key is made for the instance, kept in its credentials folder, given to the server as a file
path (in no command line or environment of the instance's processes), used by the client
commands with no flag, printed by ``nimctl env`` for other clients, and removed by ``stop``.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from nimctl import contract
from tests.cli.conftest import nimctl
from tests.server_process import free_port

NAME = "auth-e2e"


@pytest.fixture(scope="module")
def instance(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {
        "NIMCTL_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "NIMCTL_URL": "",
        "NIMCTL_API_KEY": "",
    }
    port = free_port()
    args = ["--runtime", "local", "--name", NAME, "--port", str(port), "--cache", str(model_cache)]
    started = nimctl("run", "tiny-vlm", "-d", "--timeout", "600", *args, env=env)
    try:
        assert started.exit_code == 0, started.output
        yield {**env, "url": f"http://127.0.0.1:{port}"}
    finally:
        nimctl("stop", NAME, env=env)


def _folder(env: dict[str, str]) -> Path:
    return Path(env["NIMCTL_STATE_DIR"]) / "credentials" / NAME


@pytest.mark.engine
def test_the_key_is_in_no_command_line_or_environment(instance: dict[str, str]) -> None:
    key = (_folder(instance) / contract.API_KEYS_FILE_NAME).read_text().strip()
    record = json.loads(
        (Path(instance["NIMCTL_STATE_DIR"]) / "instances" / NAME / "instance.json").read_text()
    )
    launcher = psutil.Process(record["pid"])
    tree = [launcher, *launcher.children(recursive=True)]
    assert len(tree) >= 3  # launcher, front, engine
    for process in tree:
        assert key not in " ".join(process.cmdline())
        assert all(key not in value for value in process.environ().values())
    assert launcher.environ()[contract.API_KEY_FILE] == str(
        _folder(instance).resolve() / contract.API_KEYS_FILE_NAME
    )
    dry = nimctl("run", "tiny-vlm", "--runtime", "local", "--dry-run", "--name", "other", env=instance)
    assert dry.exit_code == 0 and f"{contract.API_KEY_FILE}=" in dry.stdout


@pytest.mark.engine
def test_the_server_wants_the_key_and_chat_uses_it_with_no_flag(instance: dict[str, str]) -> None:
    answer = httpx.get(instance["url"] + "/v1/models", timeout=30)
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    chat = nimctl("chat", "--url", instance["url"], "--max-tokens", "3", "--no-stream", "Hi", env=instance)
    assert chat.exit_code == 0, chat.output
    wrong = nimctl("models", "--url", instance["url"], "--api-key", "wrong", env=instance)
    assert wrong.exit_code != 0 and "Error:" in wrong.stderr


@pytest.mark.engine
def test_nimctl_env_points_openai_at_the_instance(instance: dict[str, str]) -> None:
    printed = nimctl("env", NAME, env=instance)
    assert printed.exit_code == 0, printed.output
    variables = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in printed.stdout.splitlines()
        if line.startswith("export ")
    )
    assert variables["OPENAI_BASE_URL"] == instance["url"] + "/v1"
    client = openai.OpenAI(
        base_url=variables["OPENAI_BASE_URL"], api_key=variables["OPENAI_API_KEY"], max_retries=0, timeout=120
    )
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert reply.choices[0].message is not None


@pytest.mark.engine
def test_stop_removes_the_credentials(instance: dict[str, str]) -> None:
    assert _folder(instance).is_dir()
    stopped = nimctl("stop", NAME, env=instance)
    assert stopped.exit_code == 0, stopped.output
    assert not _folder(instance).exists()
