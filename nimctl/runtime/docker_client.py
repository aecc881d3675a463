"""Connecting to the Docker daemon, with one clear error when it does not answer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from nimctl.errors import RuntimeUnavailableError

if TYPE_CHECKING:
    from docker import DockerClient

# Daemon calls are quick; builds stream for minutes between lines, so they ask for no limit.
DEFAULT_TIMEOUT_S = 60


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # The SDK wraps the interesting part ("Connection refused", "No such file") deep inside.
    for marker in ("Connection refused", "No such file or directory", "Permission denied", "timed out"):
        if marker.lower() in str(exc).lower():
            return marker
    return text[:200]


def connect(timeout: float | None = DEFAULT_TIMEOUT_S) -> DockerClient:
    """A client whose daemon has answered a ping; else :class:`RuntimeUnavailableError`."""
    import docker
    from docker.errors import DockerException

    client = None
    try:
        client = docker.from_env(timeout=timeout) if timeout else docker.from_env(timeout=24 * 3600)
        client.ping()
    except (DockerException, OSError) as exc:
        if client is not None:
            client.close()
        raise unavailable(exc) from None
    return client


def may_answer() -> bool:
    """False when no daemon can answer (a local socket that does not exist); costs no SDK import.

    The docker SDK reads only ``DOCKER_HOST`` (no contexts), so for the default socket this
    is exact; any other address has to be asked.
    """
    address = daemon_address()
    if address.startswith("unix://"):
        return Path(address.removeprefix("unix://")).exists()
    return True


def unavailable(exc: BaseException) -> RuntimeUnavailableError:
    where = daemon_address()
    hint = (
        "start Docker (`sudo scripts/ensure-docker.sh` or `sudo systemctl start docker`), "
        "or run with --runtime local"
    )
    if "Permission denied" in _reason(exc):
        hint = "add yourself to the docker group (then log in again), or run with --runtime local"
    return RuntimeUnavailableError(f"Docker daemon not reachable at {where}: {_reason(exc)}", hint=hint)


def daemon_answers() -> bool:
    """Whether a Docker daemon answers; for ``--runtime auto``, so it must be quick."""
    if not may_answer():
        return False
    try:
        client = connect(timeout=5)
    except RuntimeUnavailableError:
        return False
    client.close()
    return True
