"""`nimctl stop` of a container that is running and ready: SIGTERM reaches the front, which
drains, stops its engine and exits 0, well before Docker's SIGKILL; then nothing remains.

(test_container_lifecycle.py stops a container whose engine was killed: an exited one.)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from nimctl.runtime.instances import STOP_TIMEOUT_S
from tests.docker.conftest import RUN_TIMEOUT_S, Cli, free_port, labelled

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = "nimctl-e2e-graceful"


def test_stop_of_a_running_container_is_graceful(
    docker_client: DockerClient,
    cpu_image: str,
    nimctl: Cli,
    session_dirs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nimctl.runtime.manage import stop_instance

    # stop_instance runs in this process: it reads the same state folder as the CLI.
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(session_dirs["state"]))
    port = free_port()
    try:
        code, _, err = nimctl(
            "run", "tiny-vlm", "-d", "--runtime", "docker", "--name", NAME, "--port", str(port),
            "--cache", str(session_dirs["cache"]), "--image", cpu_image, "--timeout", RUN_TIMEOUT_S,
        )  # fmt: skip
        assert code == 0, err
        assert docker_client.containers.get(NAME).status == "running"
        began = time.monotonic()
        stopped = stop_instance(NAME)
        took = time.monotonic() - began
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": NAME}):
            container.remove(force=True)
    assert stopped.was_running
    # 0: the front handled SIGTERM itself (137 would be Docker's SIGKILL after the timeout).
    assert stopped.instance.exit_code == 0, stopped.instance
    assert took < STOP_TIMEOUT_S, f"stop took {took:.0f}s: the front did not end on SIGTERM"
    assert labelled(docker_client, NAME) == []
