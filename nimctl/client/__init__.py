"""Talking to a running nimctl/NIM server: one httpx client, typed results, image helpers.

A library: no Typer and no printing here. Failures are raised as the ``ClientError``
subclasses of :mod:`nimctl.errors`, each with the server's message and a hint.

The names below are loaded on first use so that ``import nimctl.client`` stays cheap
(the CLI's start-up time matters: see ``benchmarks/cli_startup.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nimctl.client.http import DEFAULT_URL, NimClient, Timeouts
    from nimctl.client.images import DEFAULT_MAX_IMAGE_BYTES, image_to_url

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "DEFAULT_URL", "NimClient", "Timeouts", "image_to_url"]

_WHERE = {
    "NimClient": "nimctl.client.http",
    "Timeouts": "nimctl.client.http",
    "DEFAULT_URL": "nimctl.client.http",
    "image_to_url": "nimctl.client.images",
    "DEFAULT_MAX_IMAGE_BYTES": "nimctl.client.images",
}


def __getattr__(name: str) -> Any:
    module_name = _WHERE.get(name)
    if module_name is None:
        raise AttributeError(f"module 'nimctl.client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
