"""The Compose file ``nimctl generate compose`` writes, run for real with Docker Compose.

``nimctl generate compose tiny-vlm`` into a folder, the API key into the secrets file it asks for,
then ``docker-compose up -d`` (Debian's docker-compose 1.29; ``docker compose`` where that plugin is
the one installed): the container's own healthcheck turns healthy, a chat answers through the
published port with the official ``openai`` client, and ``docker-compose down -v`` leaves no
container, network or volume of the project behind. The image is the CPU image of this checkout
(the one ``nimctl run`` and the other Docker tests use); the file must name it by itself.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import openai
import pytest
import yaml

from tests.docker.conftest import RUN_TIMEOUT_S, Cli, free_port

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = "nimctl-e2e-compose"
PROJECT = "nimctl-e2e-compose"
HEALTHY_WITHIN_S = float(RUN_TIMEOUT_S)  # the tiny model on 2 busy cores: 1-4 minutes
COMPOSE_TIMEOUT_S = 300  # one docker-compose command (up creates, down stops with a grace period)


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    pytest.fail("no Docker Compose: scripts/ensure-docker.sh installs Debian's docker-compose")


class Compose:
    def __init__(self, file: Path) -> None:
        self.base = [*compose_command(), "--project-name", PROJECT, "--file", str(file)]
        self.folder = file.parent

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            capture_output=True,
            text=True,
            cwd=self.folder,
            timeout=COMPOSE_TIMEOUT_S,
            check=False,
        )


def project_leftovers(client: DockerClient) -> dict[str, list[str]]:
    label = {"label": f"com.docker.compose.project={PROJECT}"}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=label)]
        + [c.name for c in client.containers.list(all=True, filters={"name": f"^{NAME}$"})],
        "networks": [n.name for n in client.networks.list(filters=label)],
        "volumes": [v.name for v in client.volumes.list(filters=label)],
    }


def remove_leftovers(client: DockerClient) -> None:
    """A previous run killed half-way may have left the project behind."""
    label = {"label": f"com.docker.compose.project={PROJECT}"}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True)
    for container in client.containers.list(all=True, filters={"name": f"^{NAME}$"}):
        container.remove(force=True)
    for network in client.networks.list(filters=label):
        network.remove()
    for volume in client.volumes.list(filters=label):
        volume.remove(force=True)


def wait_healthy(client: DockerClient, deadline: float) -> None:
    """Poll the container's healthcheck status until it is healthy; fail when it cannot become so."""
    status = "missing"
    while time.monotonic() < deadline:
        found = client.containers.list(all=True, filters={"name": f"^{NAME}$"})
        if found:
            state = found[0].attrs["State"]
            status = (state.get("Health") or {}).get("Status", "no healthcheck")
            if status == "healthy":
                return
            if state["Status"] in ("exited", "dead") or status in ("unhealthy", "no healthcheck"):
                logs = found[0].logs(tail=40).decode(errors="replace")
                pytest.fail(f"{NAME}: container {state['Status']}, health {status}; last lines:\n{logs}")
        time.sleep(2)
    pytest.fail(f"{NAME} not healthy within {HEALTHY_WITHIN_S:.0f} s (health: {status})")


@pytest.fixture
def generated(tmp_path: Path, nimctl: Cli, session_dirs: dict[str, Path]) -> tuple[Path, int, str]:
    """(compose file, published port, API key): generated for the tiny VLM, secrets filled in."""
    port = free_port()
    out = tmp_path / "deploy"
    args = ["--name", NAME, "--port", str(port), "--cache", str(session_dirs["cache"])]
    code, _, err = nimctl("generate", "compose", "tiny-vlm", *args, "-o", str(out))
    assert code == 0, err
    (file,) = sorted(out.glob("*.y*ml"))
    key = secrets.token_hex(16)
    spec = yaml.safe_load(file.read_text())
    for secret in spec.get("secrets", {}).values():  # each file the header asks to create
        path = out / secret["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)
    return file, port, key


@pytest.fixture
def compose(generated: tuple[Path, int, str], docker_client: DockerClient) -> Iterator[Compose]:
    remove_leftovers(docker_client)
    runner = Compose(generated[0])
    try:
        yield runner
    finally:
        runner("down", "--volumes", "--timeout", "30")
        remove_leftovers(docker_client)


def test_generated_compose_file_runs_healthy_answers_and_leaves_nothing(
    generated: tuple[Path, int, str], compose: Compose, docker_client: DockerClient, cpu_image: str
) -> None:
    file, port, key = generated
    (service,) = yaml.safe_load(file.read_text())["services"].values()
    assert service["image"] == cpu_image  # the image nimctl run uses, built from this checkout
    assert service["ports"] == [f"127.0.0.1:{port}:8000"]

    started = time.monotonic()
    up = compose("up", "--detach", "--no-build")
    assert up.returncode == 0, f"up failed:\n{up.stderr}"
    wait_healthy(docker_client, started + HEALTHY_WITHIN_S)

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=120, max_retries=0)
    models = [model.id for model in client.models.list().data]
    assert models, "no model listed"
    reply = client.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Say hello."}], max_tokens=4
    )
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("length", "stop")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 4
    with pytest.raises(openai.AuthenticationError):  # the key from the secrets file is required
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()

    down = compose("down", "--volumes", "--timeout", "30")
    assert down.returncode == 0, f"down failed:\n{down.stderr}"
    assert project_leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}
