"""An idle stop in a container under ``--restart on-failure``: the front exits 0 after the
interval and Docker leaves it stopped (on-failure restarts a crash, not an exit 0); then
``nimctl stop`` removes it and nothing remains."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from nimctl import contract
from tests.docker.conftest import RUN_TIMEOUT_S, Cli, free_port, labelled

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = "i17idle-docker"
# Long enough that `nimctl run -d` sees ready before the stop on a loaded machine (its wait asks
# Docker for the state and the log's last line each second, which can take seconds under load).
IDLE_S = 10


def test_an_idle_stop_is_not_restarted_under_on_failure(
    docker_client: DockerClient, cpu_image: str, nimctl: Cli, session_dirs: dict[str, Path]
) -> None:
    port = free_port()
    try:
        code, out, err = nimctl(
            "run", "tiny-vlm", "-d", "--runtime", "docker", "--name", NAME, "--port", str(port),
            "--cache", str(session_dirs["cache"]), "--image", cpu_image, "--timeout", RUN_TIMEOUT_S,
            "--restart", "on-failure", "--idle-stop", f"{IDLE_S}s",
        )  # fmt: skip
        assert code == 0, out + err
        container = docker_client.containers.get(NAME)
        assert container.labels[contract.IDLE_STOP_LABEL] == str(IDLE_S)
        deadline = time.monotonic() + 120
        while container.status != "exited":
            assert time.monotonic() < deadline, "the container did not stop itself"
            time.sleep(0.5)
            container.reload()
        # A moment for a restart policy to act, had it restarted it: Docker restarts at once
        # (100 ms first back-off), so a restart would show as running or a count above 0.
        settle = time.monotonic() + 3
        while time.monotonic() < settle:
            container.reload()
            assert container.status == "exited" and container.attrs["RestartCount"] == 0, container.status
            time.sleep(0.5)
        assert container.attrs["State"]["ExitCode"] == 0
        logs = container.logs().decode("utf-8", "replace")
        assert f"{contract.IDLE_STOP_LOG_MARK} no inference request for {IDLE_S}s" in logs
    finally:
        code, _, err = nimctl("stop", NAME)
        for leftover in docker_client.containers.list(all=True, filters={"name": NAME}):
            leftover.remove(force=True)
    assert code == 0, err
    assert labelled(docker_client, NAME) == []
