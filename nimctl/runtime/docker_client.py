"""Connecting to the Docker daemon, with one clear error when it does not answer, and the
translation of the SDK's errors met in the middle of an operation into nimctl's."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.errors import RuntimeFailure, RuntimeUnavailableError, UsageError

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


def running_container_urls(timeout: float) -> list[str] | None:
    """The URLs of nimctl's running containers, asked over the daemon's Unix socket with httpx.

    For the client commands' default target: importing the docker SDK would cost them more than
    the rest of their start-up. None when the daemon is not on a Unix socket (ask the SDK); an
    empty list when it could not be asked in ``timeout`` seconds.
    """
    from nimctl.contract import URL_LABEL

    containers = container_summaries(timeout, all_states=False)
    if containers is None:
        return None if not daemon_address().startswith("unix://") else []
    labels = [c.get("Labels") for c in containers]
    urls = [label.get(URL_LABEL) for label in labels if isinstance(label, dict)]
    return [url for url in urls if isinstance(url, str) and url]


def container_summaries(timeout: float, *, all_states: bool) -> list[dict[str, Any]] | None:
    """nimctl's containers as ``GET /containers/json`` lists them, over the daemon's Unix socket
    without the SDK; None when the daemon is not on a Unix socket or did not answer in time."""
    address = daemon_address()
    if not address.startswith("unix://"):
        return None
    import json
    import time

    from nimctl._httpx import httpx
    from nimctl.contract import MANAGED_LABEL

    # What `docker ps --filter label=ai.nimctl.managed=true` asks, newest first.
    params = {"filters": json.dumps({"label": [f"{MANAGED_LABEL}=true"]})}
    if all_states:
        params["all"] = "1"
    # No TLS over a Unix socket: without verify=False httpx builds its default TLS context anyway
    # (~70 ms of CPU, a fifth of ps).
    transport = httpx.HTTPTransport(uds=address.removeprefix("unix://"), verify=False)
    # httpx's timeout bounds each read; the deadline bounds the whole answer of a daemon that drips.
    deadline = time.monotonic() + timeout
    body = bytearray()
    try:
        with (
            httpx.Client(transport=transport, base_url="http://docker", timeout=timeout) as client,
            client.stream("GET", "/containers/json", params=params) as response,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:
                    return None
        containers = json.loads(body)
    except (httpx.HTTPError, ValueError):  # ValueError: not JSON
        return None
    if not isinstance(containers, list):
        return None
    return [c for c in containers if isinstance(c, dict)]


PERMISSION_HINT = "add yourself to the docker group (then log in again), or run with --runtime local"


class DockerPermissionError(RuntimeUnavailableError):
    """A daemon is there, but its socket refuses this user."""


def unavailable(exc: BaseException) -> RuntimeUnavailableError:
    reason = _reason(exc)
    message = f"Docker daemon not reachable at {daemon_address()}: {reason}"
    if reason == "Permission denied":
        return DockerPermissionError(message, hint=PERMISSION_HINT)
    return RuntimeUnavailableError(
        message,
        hint="start Docker (`sudo scripts/ensure-docker.sh` or `sudo systemctl start docker`), "
        "or run with --runtime local",
    )


def probe_daemon() -> RuntimeUnavailableError | None:
    """None when a Docker daemon answers, else why not; for ``--runtime auto``, so it is quick."""
    if not may_answer():
        return unavailable(FileNotFoundError("No such file or directory"))  # no socket: said as the SDK would
    try:
        client = connect(timeout=5)
    except RuntimeUnavailableError as exc:
        return exc
    client.close()
    return None


@contextlib.contextmanager
def translated(doing: str, name: str | None = None) -> Iterator[None]:
    """The SDK's failures while ``doing`` something to the instance ``name``, as nimctl errors.

    A container removed by someone else meanwhile is reported as gone (a usage error, like
    any unknown name); an error the daemon answered is a runtime failure; a daemon that went
    away is the runtime being unavailable. Anything else stays a bug.
    """
    from docker.errors import APIError, DockerException, NotFound

    try:
        yield
    except NotFound:
        what = f"container {name}" if name else "the container"
        raise UsageError(
            f"{what} is gone (removed while {doing})", hint="nimctl ps --all lists what is left"
        ) from None
    except APIError as exc:
        text = str(exc.explanation or exc).strip().splitlines()
        raise RuntimeFailure(
            f"Docker failed while {doing}: {text[0] if text else type(exc).__name__}",
            hint="run it again; `docker ps -a --filter label=ai.nimctl.managed=true` shows Docker's view",
        ) from None
    except (DockerException, OSError) as exc:  # requests' connection errors are OSErrors
        raise unavailable(exc) from None
