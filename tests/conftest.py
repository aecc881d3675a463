"""Session fixtures: one real ``nim-serve`` with the built-in tiny VLM on vLLM CPU."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.server_process import ServerProcess

if TYPE_CHECKING:
    from tests.hub_emulation import HubEmulation

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


TINY_VLM_REPO = "nimctl-test/tiny-vlm"


@pytest.fixture(scope="session")
def hub(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulation]:
    """A hub emulation serving the tiny VLM as ``nimctl-test/tiny-vlm`` (see tests/hub_emulation.py).

    Ref ``v1`` (commit ``hub.tiny_vlm_v1``) holds the files as generated (less nimctl's built-in marker);
    ``main`` (``hub.tiny_vlm_main``) is a later commit that adds a README.md. The model is generated into the
    session ``model_cache``, so ``nim_server`` reuses it.
    """
    from nimctl.models.builtin import MARKER_FILE
    from tests.hub_emulation import HubEmulation
    from tests.hub_repos import tiny_vlm_folder

    v1 = tmp_path_factory.mktemp("hub-tiny-vlm-v1")
    shutil.copytree(
        tiny_vlm_folder(model_cache), v1, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MARKER_FILE)
    )
    main = tmp_path_factory.mktemp("hub-tiny-vlm-main")
    shutil.copytree(v1, main, dirs_exist_ok=True)
    (main / "README.md").write_text(
        "# tiny-vlm\n\nnimctl's built-in test model, second commit.\n", encoding="utf-8"
    )
    with HubEmulation() as emulation:
        emulation.tiny_vlm_v1 = emulation.add_revision(TINY_VLM_REPO, v1, refs=("v1",))
        emulation.tiny_vlm_main = emulation.add_revision(TINY_VLM_REPO, main, refs=("main",))
        yield emulation


@pytest.fixture
def hf_env(hub: HubEmulation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEmulation]:
    """Point huggingface_hub, in this process and in children, at ``hub``; returns ``hub`` (counters and faults reset).

    huggingface_hub 2.4 reads its settings once, at import (``constants.py``): ``HF_ENDPOINT`` set afterwards is
    ignored by ``HfApi()`` (``endpoint=constants.ENDPOINT``), by ``hf_hub_url`` (``HUGGINGFACE_CO_URL_TEMPLATE``),
    and by the module-level ``huggingface_hub.model_info`` etc. (one ``HfApi`` made at import). Same for HF_HOME,
    the cache and token paths, HF_HUB_OFFLINE and HF_HUB_ETAG_TIMEOUT. So the constants (and that ``HfApi``) are
    patched here as well as the environment, which only a fresh process (``nimctl`` run as a subprocess) reads.
    ``HF_TOKEN`` is read at each call, so removing it from the environment is enough.
    """
    from huggingface_hub import constants, hf_api

    home = tmp_path / "hf-home"
    settings = {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "3",
        "HF_HOME": str(home),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_OIDC_RESOURCE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
    ):
        monkeypatch.delenv(name, raising=False)
    patches = {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_ETAG_TIMEOUT": 3,
    }
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", hub.url)
    hub.reset_counters()
    hub.reset_faults()
    yield hub
    hub.reset_faults()  # also releases a response a test left stalled
