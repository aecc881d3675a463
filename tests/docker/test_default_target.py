"""Client commands without --url find the one running container, asking the daemon without the SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nimctl.errors import EXIT_UNREACHABLE
from tests.docker.conftest import Cli, free_port

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = f"nimctl-e2e-default-target-{os.getpid()}"  # another checkout's tests may run beside these


def _others_running(client: DockerClient) -> list[str]:
    filters = {"label": "ai.nimctl.managed=true"}
    return [c.name for c in client.containers.list(filters=filters) if c.name != NAME]


@pytest.fixture
def labelled_container(docker_client: DockerClient, cpu_image: str) -> Iterator[str]:
    """A running container labelled as nimctl labels its instances; nothing listens at its URL."""
    url = f"http://127.0.0.1:{free_port()}"
    labels = {"ai.nimctl.managed": "true", "ai.nimctl.url": url}
    container = docker_client.containers.run(
        cpu_image, entrypoint=["sleep", "300"], name=NAME, labels=labels, detach=True
    )
    try:
        yield url
    finally:
        container.remove(force=True)


def test_health_without_a_url_talks_to_the_running_container(
    labelled_container: str, nimctl: Cli, docker_client: DockerClient
) -> None:
    if others := _others_running(docker_client):
        pytest.skip(f"other nimctl containers run ({', '.join(others)}): no URL would be a usage error")
    code, _, err = nimctl("health", "--format", "json")
    # Its URL was found (and nothing answers there): the error names it.
    assert code == EXIT_UNREACHABLE, err
    assert f"cannot reach the server at {labelled_container}" in err


def test_the_lookup_imports_no_docker_sdk(labelled_container: str, tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from nimctl.runtime.manage import running_instance_urls\n"
        "urls = running_instance_urls()\n"
        "print(json.dumps([urls, sorted(m for m in sys.modules if m.split('.')[0] == 'docker')]))\n"
    )
    env = {"NIMCTL_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True, cwd=root)
    urls, docker_modules = json.loads(result.stdout)
    assert labelled_container in urls
    assert docker_modules == []
