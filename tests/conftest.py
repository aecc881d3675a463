"""Session fixtures: one real ``nim-serve`` with the built-in tiny VLM on vLLM CPU."""

from __future__ import annotations

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
    """A running front + engine serving the tiny VLM; ``.url`` is where to talk to it."""
    server = ServerProcess(TEST_MODEL, model_cache, tmp_path_factory.mktemp("logs") / "nim-serve.log")
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
