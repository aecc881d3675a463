"""One container, its whole life: run -d, ps, a chat with an image, logs, an engine crash, stop.

The tests share one running container (each vLLM start costs minutes on two cores) and run
in file order; each step checks what a user would see at that point.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from nimctl.errors import EXIT_USAGE
from tests.docker.conftest import RUN_TIMEOUT_S, Cli, free_port, labelled
from tests.images import png_data_url

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = "nimctl-e2e-container"


@pytest.fixture(scope="module")
def started(
    docker_client: DockerClient, cpu_image: str, nimctl: Cli, session_dirs: dict
) -> Iterator[dict[str, str]]:
    port = free_port()
    code, out, err = nimctl(
        "run",
        "tiny-vlm",
        "-d",
        "--runtime",
        "docker",
        "--name",
        NAME,
        "--port",
        str(port),
        "--cache",
        str(session_dirs["cache"]),
        "--image",
        cpu_image,
        "--timeout",
        RUN_TIMEOUT_S,
    )
    try:
        yield {
            "code": str(code),
            "out": out,
            "err": err,
            "url": f"http://127.0.0.1:{port}",
            "port": str(port),
        }
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": NAME}):
            container.remove(force=True)


def _ps(nimctl: Cli, *flags: str) -> dict:
    code, out, err = nimctl("ps", "--format", "json", *flags)
    assert code == 0, err
    rows = [row for row in json.loads(out) if row["name"] == NAME]
    assert len(rows) <= 1
    return rows[0] if rows else {}


def test_run_detached_returns_once_ready(started: dict[str, str]) -> None:
    assert started["code"] == "0", started["err"]
    assert f"tiny-vlm is ready at {started['url']}" in started["out"]
    assert f"nimctl logs -f {NAME}" in started["out"] and f"nimctl stop {NAME}" in started["out"]
    err = started["err"]
    assert "profile: vllm-fp32-tp1-pp1-cpu" in err
    assert f"{NAME}: loading the model" in err and f"{NAME}: ready" in err


def test_ps_shows_it_ready(started: dict[str, str], nimctl: Cli) -> None:
    row = _ps(nimctl)
    assert row["runtime"] == "docker" and row["state"] == "running" and row["ready"] is True
    assert row["model"] == "tiny-vlm" and row["profile_name"] == "vllm-fp32-tp1-pp1-cpu"
    assert row["url"] == started["url"] and row["uptime_s"] >= 0


def test_client_commands_find_it_without_a_url(
    started: dict[str, str], nimctl: Cli, docker_client: DockerClient
) -> None:
    running = docker_client.containers.list(filters={"label": "ai.nimctl.managed=true"})
    if others := [c.name for c in running if c.name != NAME]:
        pytest.skip(f"other nimctl containers run ({', '.join(others)}): no URL would mean several")
    code, out, err = nimctl("health", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["url"] == started["url"] and report["ready"] is True


def test_container_is_locked_down(
    started: dict[str, str], docker_client: DockerClient, session_dirs: dict
) -> None:
    attrs = docker_client.containers.get(NAME).attrs
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ShmSize"] == 2**30
    assert host["PortBindings"]["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": started["port"]}]
    mounts = {m["Destination"]: m["Source"] for m in attrs["Mounts"]}
    assert mounts["/opt/nim/.cache"] == str(session_dirs["cache"])
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["NIM_MODEL_PATH"] == "builtin://tiny-vlm"
    assert env["NIM_MODEL_PROFILE"] == attrs["Config"]["Labels"]["ai.nimctl.profile"]
    assert attrs["Config"]["Labels"]["ai.nimctl.url"] == started["url"]


def test_chat_with_an_image_through_the_published_port(started: dict[str, str], session_dirs: dict) -> None:
    from openai import OpenAI

    key = (session_dirs["state"] / "credentials" / NAME / "api-keys").read_text().strip()  # run made one
    client = OpenAI(base_url=started["url"] + "/v1", api_key=key, timeout=300)
    question = {"type": "text", "text": "What is in this picture?"}
    image = {"type": "image_url", "image_url": {"url": png_data_url()}}
    with_image = client.chat.completions.create(
        model="tiny-vlm", max_tokens=8, messages=[{"role": "user", "content": [question, image]}]
    )
    assert with_image.choices and with_image.choices[0].message.role == "assistant"
    assert with_image.usage is not None and with_image.usage.completion_tokens > 0
    text_only = client.chat.completions.create(
        model="tiny-vlm", max_tokens=1, messages=[{"role": "user", "content": [question]}]
    )
    # The image reached the model: it adds its image tokens to the prompt.
    assert text_only.usage is not None
    assert with_image.usage.prompt_tokens > text_only.usage.prompt_tokens


def test_logs_show_the_engine_start(started: dict[str, str], nimctl: Cli) -> None:
    code, out, err = nimctl("logs", NAME)
    assert code == 0, err
    assert "nim-serve on 0.0.0.0:8000 (http); model builtin://tiny-vlm" in out
    assert "engine started" in out and "vllm.entrypoints.openai.api_server" in out
    code, out, _ = nimctl("logs", NAME, "--tail", "3")
    assert code == 0 and len(out.splitlines()) == 3


def test_the_name_is_taken(started: dict[str, str], nimctl: Cli, docker_client: DockerClient) -> None:
    code, _, err = nimctl("run", "-d", "--runtime", "docker", "--name", NAME, "--port", str(free_port()))
    assert code == EXIT_USAGE
    assert f"Error: the name {NAME} is in use by container" in err
    assert labelled(docker_client, NAME) == [NAME]


def test_engine_crash_ends_the_container(
    started: dict[str, str], nimctl: Cli, docker_client: DockerClient
) -> None:
    container = docker_client.containers.get(NAME)
    # The engine is the vLLM server nim-serve started; SIGKILL is what the OOM killer sends.
    result = container.exec_run(["pkill", "-KILL", "-f", "vllm.entrypoints.openai.api_server"])
    assert result.exit_code == 0, result.output
    deadline = time.monotonic() + 120
    while container.status != "exited" and time.monotonic() < deadline:
        time.sleep(1)
        container.reload()
    assert container.status == "exited", "the container outlived its engine by 2 minutes"
    assert container.attrs["State"]["ExitCode"] != 0

    row = _ps(nimctl, "--all")
    assert row["state"] == "exited" and row["exit_code"] == container.attrs["State"]["ExitCode"]
    assert row["ready"] is None
    assert _ps(nimctl) == {}
    code, out, _ = nimctl("logs", NAME, "--tail", "40")
    assert code == 0 and "engine exited" in out


def test_stop_removes_it(started: dict[str, str], nimctl: Cli, docker_client: DockerClient) -> None:
    code, out, err = nimctl("stop", NAME)
    assert code == 0, err
    assert out.startswith(f"{NAME}: had already exited with code ")
    assert labelled(docker_client, NAME) == []
    code, _, err = nimctl("logs", NAME)
    assert code == EXIT_USAGE and f"no instance named {NAME}" in err
