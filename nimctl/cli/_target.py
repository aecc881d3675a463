"""Where the client commands talk to, and the options that say so.

Order: ``--url``, else ``NIMCTL_URL`` (both through the option), else the one running
instance that ``nimctl ps`` shows, else ``http://127.0.0.1:8000``; several running
instances and no URL is a usage error rather than a guess. An instance nimctl started is
talked to with its own key and CA (its credentials folder, found by its URL); ``--api-key``
and the root option ``--cacert`` are for other servers. The module itself is cheap;
the instance lookup reads nimctl's state folder and, when a Docker socket is there, asks
the daemon (one request over the socket; the SDK only for a daemon elsewhere): scripts that
set ``NIMCTL_URL`` never pay it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.client import DEFAULT_URL
from nimctl.errors import NimctlError, UsageError

if TYPE_CHECKING:
    import ssl

    from nimctl.client.http import NimClient
    from nimctl.runtime.instances import Instance

NAMED_AT_MOST = 3  # running instances named in the "several" error
# The root command's --cacert, for make_client (a Typer context is not reachable from here).
_CACERT: ContextVar[str | None] = ContextVar("nimctl_cacert", default=None)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="NIMCTL_URL",
        help="Server to talk to [env NIMCTL_URL; default: the one running instance, else http://127.0.0.1:8000].",
        show_default=False,
        show_envvar=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="NIMCTL_API_KEY",
        help="Bearer token for a server that wants one [env NIMCTL_API_KEY].",
        show_default=False,
        show_envvar=False,
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        envvar="NIMCTL_TIMEOUT",
        min=0.1,
        help="Seconds to wait for an answer [env NIMCTL_TIMEOUT; default 30, chat 600].",
        show_default=False,
        show_envvar=False,
    ),
]


def find_running_instance_url() -> str | None:
    """The URL of the one instance ``nimctl ps`` would list; None when none runs.

    Called only when neither ``--url`` nor ``NIMCTL_URL`` is given. Local instances are read
    first; Docker is asked (given up on after about a second) only when that can still change the
    answer and a daemon may be there. Several running instances raise a UsageError.
    """
    from nimctl.runtime.manage import running_instance_urls

    try:
        urls = running_instance_urls(limit=NAMED_AT_MOST + 1)
    except NimctlError:
        return None  # no runtime to ask: the default URL is as good a guess as any
    if len(urls) > 1:
        more = ", ..." if len(urls) > NAMED_AT_MOST else ""
        raise UsageError(
            f"several nimctl instances are running ({', '.join(urls[:NAMED_AT_MOST])}{more}); which one?",
            hint="pass --url (or set NIMCTL_URL); `nimctl ps` lists them",
        )
    return urls[0] if urls else None


def running_instance(name: str) -> Instance:
    """The nimctl instance ``nimctl ps`` names ``name``; one that is not running is a UsageError."""
    from nimctl.runtime.manage import find_instance

    located = find_instance(name)
    try:
        found = located.handle.to_instance()
    finally:
        located.close()
    if not found.running or not found.url:
        raise UsageError(f"instance {name} is not running ({found.state})", hint="nimctl ps lists them")
    return found


def resolve_url(url: str | None) -> str:
    if url:
        return url
    return find_running_instance_url() or DEFAULT_URL


def make_client(
    url: str | None,
    api_key: str | None,
    *,
    timeout: float | None = None,
    inference_timeout: float | None = None,
) -> NimClient:
    """The client for the resolved target; ``timeout`` overrides the read timeout of every call."""
    from nimctl.client.http import NimClient, Timeouts, tls_context

    defaults = Timeouts()
    timeouts = Timeouts(
        connect=min(defaults.connect, timeout) if timeout else defaults.connect,
        management=timeout or defaults.management,
        inference=timeout or inference_timeout or defaults.inference,
    )
    target = resolve_url(url)
    key, tls = _instance_credentials(target)
    if tls is None and (cacert := _cacert()):
        tls = tls_context(cacert)
    return NimClient(target, api_key=api_key or key, timeouts=timeouts, tls=tls)


def _instance_credentials(url: str) -> tuple[str | None, ssl.SSLContext | None]:
    """The key and TLS settings of the instance nimctl started at ``url`` (none for other servers).

    Read from its credentials folder (a few small files): a given --api-key still wins.
    """
    from nimctl.runtime.credentials import for_url

    found = for_url(url)
    if found is None:
        return None, None
    return found.api_key(), found.ssl_context()


def use_cacert(path: str | None) -> None:
    """The root option ``--cacert`` (or ``NIMCTL_CACERT``): set by the root command for the one it runs."""
    _CACERT.set(path)


def _cacert() -> str | None:
    return _CACERT.get()
