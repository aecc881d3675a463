"""End-to-end fixtures: a real Docker daemon, the CPU image built from this checkout, the CLI.

Every test module here is marked ``docker``; its tests skip, saying why, only when no Docker daemon
answers (``scripts/ensure-docker.sh`` starts one). The image is (re)built from the current
source before the first test: with the deps image already there (``scripts/build-images.sh``)
that takes seconds, otherwise it builds everything, offline when the local base image and
the wheelhouse exist.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from nimctl.errors import RuntimeUnavailableError

if TYPE_CHECKING:
    from docker import DockerClient

    from nimctl.runtime.images import BuildResult

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / "container" / "context" / "wheels"
RUN_TIMEOUT_S = "900"  # a tiny model on 2 busy cores starts in 1-4 minutes


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    from nimctl.runtime.docker_client import connect

    try:
        client = connect(timeout=None)
    except RuntimeUnavailableError as exc:
        pytest.skip(f"{exc.message} (start one with scripts/ensure-docker.sh)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def cpu_build(docker_client: DockerClient) -> BuildResult:
    """The CPU image of this checkout's code: the deps image is reused when present."""
    from nimctl.runtime.images import LOCAL_BASE_IMAGE, build_image, image_exists

    local_base = image_exists(docker_client, LOCAL_BASE_IMAGE)
    wheels = WHEELHOUSE if WHEELHOUSE.is_dir() and any(WHEELHOUSE.glob("*.whl")) else None
    if not local_base or wheels is None:
        pytest.fail("no local base image or wheelhouse: run scripts/build-images.sh first")
    return build_image(docker_client, device="cpu", base_image=LOCAL_BASE_IMAGE, wheelhouse=wheels)


@pytest.fixture(scope="session")
def cpu_image(cpu_build: BuildResult) -> str:
    return cpu_build.image


@pytest.fixture(scope="session")
def session_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # One cache for every test: the built-in model is generated once.
    return {"state": tmp_path_factory.mktemp("state"), "cache": tmp_path_factory.mktemp("cache")}


@pytest.fixture(scope="session")
def cli_env(session_dirs: dict[str, Path]) -> dict[str, str]:
    return {
        "NIMCTL_STATE_DIR": str(session_dirs["state"]),
        "NIMCTL_ASSUME_GPUS": "none",
        "NO_COLOR": "1",
        "HF_TOKEN": "",
        "NGC_API_KEY": "",
    }


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, list(argv), env=self.env)
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="session")
def nimctl(cli_env: dict[str, str]) -> Cli:
    return Cli(cli_env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def labelled(client: DockerClient, name: str | None = None) -> list[str]:
    """Names of the containers, running or not, that carry nimctl's label."""
    filters = {"label": "ai.nimctl.managed=true"}
    return [c.name for c in client.containers.list(all=True, filters=filters) if name in (None, c.name)]
