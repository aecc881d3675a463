"""Failures of `nimctl run` against a real daemon: each gives its message and exit code, and
leaves no container behind. (An unreachable daemon is tested in tests/runtime/test_cli.py.)"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from nimctl.errors import EXIT_NO_PROFILE, EXIT_USAGE
from tests.docker.conftest import Cli, labelled

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = "nimctl-e2e-failure"


def test_port_in_use(docker_client: DockerClient, cpu_image: str, nimctl: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = nimctl("run", "-d", "--runtime", "docker", "--name", NAME, "--port", str(port))
    assert code == EXIT_USAGE
    assert f"Error: port {port} on 127.0.0.1 is already in use" in err
    assert "Hint: pass --port " in err
    assert labelled(docker_client, NAME) == []


def test_port_taken_by_another_container(docker_client: DockerClient, cpu_image: str, nimctl: Cli) -> None:
    # Docker's own proxy holds the port: the error comes from the daemon, not from our check.
    holder = docker_client.containers.run(
        cpu_image,
        name=f"{NAME}-holder",
        entrypoint=["sleep", "600"],
        ports={"8000/tcp": ("127.0.0.1", None)},
        detach=True,
        remove=True,
    )
    try:
        holder.reload()
        port = holder.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        code, _, err = nimctl("run", "-d", "--runtime", "docker", "--name", NAME, "--port", port)
        assert code == EXIT_USAGE
        assert f"Error: port {port} on 127.0.0.1 is already in use" in err
        assert labelled(docker_client, NAME) == []
    finally:
        holder.remove(force=True)


def test_unknown_profile(docker_client: DockerClient, nimctl: Cli) -> None:
    code, _, err = nimctl("run", "-d", "--runtime", "docker", "--name", NAME, "--profile", "vllm-fp8-tp8-pp1")
    assert code == EXIT_NO_PROFILE
    assert "Error: profile 'vllm-fp8-tp8-pp1' is not in the tiny-vlm manifest" in err
    assert labelled(docker_client, NAME) == []


def test_missing_image_that_nimctl_does_not_build(docker_client: DockerClient, nimctl: Cli) -> None:
    code, _, err = nimctl(
        "run", "-d", "--runtime", "docker", "--name", NAME, "--image", "nimctl/no-such-image:0"
    )
    assert code == EXIT_USAGE
    assert "Error: image nimctl/no-such-image:0 not found" in err
    assert labelled(docker_client, NAME) == []
