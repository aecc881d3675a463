"""A container with its own key and TLS: the key is in neither ``docker inspect``'s environment
nor its command, the client commands find key and CA by themselves, and stop removes them."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.docker.conftest import RUN_TIMEOUT_S, Cli, free_port

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = "nimctl-e2e-auth"


@pytest.fixture(scope="module")
def guarded(docker_client: DockerClient, cpu_image: str, nimctl: Cli, session_dirs: dict) -> Iterator[str]:
    port = free_port()
    args = ["--runtime", "docker", "--name", NAME, "--port", str(port), "--image", cpu_image, "--tls"]
    code, _, err = nimctl(
        "run", "tiny-vlm", "-d", *args, "--cache", str(session_dirs["cache"]), "--timeout", RUN_TIMEOUT_S
    )
    try:
        assert code == 0, err
        yield f"https://127.0.0.1:{port}"
    finally:
        nimctl("stop", NAME)
        for container in docker_client.containers.list(all=True, filters={"name": NAME}):
            container.remove(force=True)


def test_the_key_stays_out_of_docker_inspect_and_the_client_finds_it(
    guarded: str, docker_client: DockerClient, nimctl: Cli, session_dirs: dict
) -> None:
    folder = Path(session_dirs["state"]) / "credentials" / NAME
    key = (folder / "api-keys").read_text().strip()
    attrs = docker_client.containers.get(NAME).attrs
    assert key not in repr(attrs["Config"]["Env"]) and key not in repr(attrs["Config"]["Cmd"])
    assert key not in repr(attrs["Args"]) and key not in repr(attrs["Config"]["Labels"])
    assert "NIMCTL_API_KEY_FILE=/run/nimctl/api-keys" in attrs["Config"]["Env"]
    mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/run/nimctl")
    assert mount["RW"] is False

    with pytest.raises(httpx.ConnectError):  # not a CA the system trusts
        httpx.get(guarded + "/v1/health/live")
    unkeyed = httpx.get(
        guarded + "/v1/models", verify=ssl.create_default_context(cafile=str(folder / "ca.crt"))
    )
    assert unkeyed.status_code == 401
    code, out, err = nimctl("models", "--url", guarded)
    assert code == 0, err
    assert "tiny-vlm" in out
    code, out, err = nimctl("ps", "--format", "json")  # ps asks readiness over https, with the CA
    assert code == 0, err
    assert any(row["name"] == NAME and row["ready"] is True for row in json.loads(out)), out

    code, _, err = nimctl("stop", NAME)
    assert code == 0, err
    assert not folder.exists()
