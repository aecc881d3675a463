"""The async HTTP client of a bench run, and its few set-up calls mapped to nimctl's errors.

The load itself never raises (each failure is a counted result, see :mod:`.generator`); the set-up
calls (``/tokenize``, ``/v1/metrics``) do, with the client's messages and hints, so an unreachable or
loading server gets the same exit codes as ``nimctl health``.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

from nimctl import __version__
from nimctl._httpx import httpx
from nimctl.client.errors import map_transport_error, raise_for_status
from nimctl.errors import UnreadableAnswerError

CONNECT_TIMEOUT_S = 5.0


def async_client(
    base_url: str,
    *,
    api_key: str | None = None,
    connections: int = 4,
    timeout_s: float = 600.0,
    tls: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """A client whose pool holds ``connections`` (the generator gives each worker a client of one)."""
    headers = {
        "User-Agent": f"nimctl/{__version__} bench",
        # Compressed SSE would cost the generator a decoder per chunk, and no server should do it.
        "Accept-Encoding": "identity",
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        verify=tls if tls is not None else _default_tls(base_url),
        # Proxies from the environment rarely lead to the server measured, and would be measured too.
        trust_env=False,
    )


@functools.cache
def _default_tls(base_url: str) -> ssl.SSLContext:
    """The system's CAs for https (loaded once: a level makes one client per connection); an empty
    context for http, where no TLS connection can happen and loading CAs would only cost time."""
    if httpx.URL(base_url).scheme == "http":
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return httpx.create_ssl_context(trust_env=True)


async def call_json(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    payload: Any = None,
    *,
    not_found_hint: str | None = None,
) -> Any:
    """One set-up call; its failures leave as :class:`nimctl.errors.ClientError` subclasses."""
    try:
        response = await client.request(method, path, json=payload)
    except httpx.HTTPError as exc:
        raise map_transport_error(exc, str(client.base_url).rstrip("/"), path) from None
    if response.is_error:
        raise_for_status(response, path, not_found_hint=not_found_hint)
    try:
        return response.json()
    except ValueError:
        raise UnreadableAnswerError(
            f"the server's answer to {path} is not JSON", hint="is the URL a vLLM/NIM server?"
        ) from None


async def get_text(client: httpx.AsyncClient, path: str) -> str:
    try:
        response = await client.get(path)
    except httpx.HTTPError as exc:
        raise map_transport_error(exc, str(client.base_url).rstrip("/"), path) from None
    if response.is_error:
        raise_for_status(response, path)
    return response.text
