"""Talking to a running nimctl/NIM server: one httpx client, typed results, image helpers.

A library: no Typer and no printing here. Every failure is raised as a
:class:`ClientError` subclass (re-exported below from :mod:`nimctl.errors`, where the
whole tree and its exit codes live), each with the server's message and a hint::

    from nimctl.client import NimClient, ServerNotReadyError

    with NimClient("http://127.0.0.1:8000") as client:
        client.wait_until_ready(timeout=900)
        reply = client.chat([{"role": "user", "content": "Hi"}], model=client.default_model())
        print(reply.text)

The client's names are loaded on first use so that ``import nimctl.client`` stays cheap
(the CLI's start-up time matters: see ``benchmarks/cli_startup.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nimctl.errors import (
    ClientError,
    HTTPStatusError,
    RequestRejectedError,
    ServerFailedError,
    ServerNotReadyError,
    ServerUnreachableError,
    UnreadableAnswerError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from nimctl.client.http import NimClient, Timeouts
    from nimctl.client.images import DEFAULT_MAX_IMAGE_BYTES, image_to_url
    from nimctl.client.stream import ChatStream

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_URL",
    "ChatStream",
    "ClientError",
    "HTTPStatusError",
    "NimClient",
    "RequestRejectedError",
    "ServerFailedError",
    "ServerNotReadyError",
    "ServerUnreachableError",
    "Timeouts",
    "UnreadableAnswerError",
    "WaitTimeoutError",
    "image_to_url",
]

DEFAULT_URL = "http://127.0.0.1:8000"

_WHERE = {
    "NimClient": "nimctl.client.http",
    "Timeouts": "nimctl.client.http",
    "ChatStream": "nimctl.client.stream",
    "image_to_url": "nimctl.client.images",
    "DEFAULT_MAX_IMAGE_BYTES": "nimctl.client.images",
}


def __getattr__(name: str) -> Any:
    module_name = _WHERE.get(name)
    if module_name is None:
        raise AttributeError(f"module 'nimctl.client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
