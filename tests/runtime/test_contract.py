"""The images' Dockerfiles spell the contract's paths, port and variables as nimctl/contract.py does.

A Dockerfile cannot import Python, so its ENV, EXPOSE and COPY lines repeat the contract; this
test is what keeps the two from drifting apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nimctl import contract
from nimctl.server.config import ENV_FIELDS

CONTAINER_DIR = Path(__file__).resolve().parents[2] / "container"


def _env(dockerfile: str) -> dict[str, str]:
    """The variables of the Dockerfile's ENV instructions (KEY=VALUE forms, continued lines joined)."""
    joined = dockerfile.replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            found.update(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line))
    return found


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_agrees_with_the_contract(name: str) -> None:
    text = (CONTAINER_DIR / name).read_text(encoding="utf-8")
    env = _env(text)
    assert env[contract.CACHE_PATH] == contract.CONTAINER_CACHE
    assert env[contract.SERVER_PORT] == str(contract.CONTAINER_PORT)
    assert env[contract.PROFILES_DIR] == contract.CONTAINER_PROFILES
    assert env[contract.IN_CONTAINER] == "1"
    assert f"EXPOSE {contract.CONTAINER_PORT}" in text
    assert f"COPY profiles/ {contract.CONTAINER_PROFILES}/" in text
    assert re.search(rf"mkdir -p [^;]*{re.escape(contract.CONTAINER_CACHE)}\b", text)


def test_every_server_variable_is_described() -> None:
    assert set(ENV_FIELDS) | {contract.IN_CONTAINER} == set(contract.VARIABLES)


def test_container_paths_are_absolute_and_distinct() -> None:
    paths = [
        contract.CONTAINER_CACHE,
        contract.CONTAINER_PROFILES,
        contract.CONTAINER_USER_PROFILES,
        contract.CONTAINER_MODEL,
        contract.CONTAINER_LORA,
    ]
    assert all(path.startswith("/opt/nim/") for path in paths)
    assert len(set(paths)) == len(paths)
