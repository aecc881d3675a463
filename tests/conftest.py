"""Session fixtures: one real ``nim-serve`` with the built-in tiny VLM on vLLM CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import ServerProcess

TEST_MODEL = "builtin://tiny-vlm"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nim-cache")


@pytest.fixture(scope="session")
def nim_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running front + engine serving the tiny VLM; ``.url`` is where to talk to it.

    ``NIMCTL_TEST_SERVER_PORT`` points the tests at a server you already run (while iterating);
    the start-up observations are then empty and the test that needs them skips.
    """
    server = ServerProcess(TEST_MODEL, model_cache, tmp_path_factory.mktemp("logs") / "nim-serve.log")
    if port := os.environ.get("NIMCTL_TEST_SERVER_PORT"):
        server.port = int(port)
        yield server
        return
    with server.running():
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the real server is an engine test, marked or not (`-m "not engine"`).

    With ``NIMCTL_SKIP_DOCKER=1`` (scripts/test.sh then sets up no Docker) the container tests skip.
    """
    skip_docker = os.environ.get("NIMCTL_SKIP_DOCKER") == "1"
    for item in items:
        if "nim_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.engine)
        if skip_docker and item.get_closest_marker("docker") is not None:
            item.add_marker(pytest.mark.skip(reason="NIMCTL_SKIP_DOCKER=1: no Docker set-up in this run"))
