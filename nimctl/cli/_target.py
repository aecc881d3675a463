"""Where the client commands talk to, and the options that say so.

Order: ``--url``, else ``NIMCTL_URL`` (both through the option), else the one running
instance that ``nimctl ps`` shows, else ``http://127.0.0.1:8000``; several running
instances and no URL is a usage error rather than a guess. The module itself is cheap;
the instance lookup reads nimctl's state folder and, when a Docker socket is there, asks
the daemon (one request over the socket; the SDK only for a daemon elsewhere): scripts that
set ``NIMCTL_URL`` never pay it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.client import DEFAULT_URL
from nimctl.errors import NimctlError, UsageError

if TYPE_CHECKING:
    from nimctl.client.http import NimClient

NAMED_AT_MOST = 3  # running instances named in the "several" error

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
    from nimctl.client.http import NimClient, Timeouts

    defaults = Timeouts()
    timeouts = Timeouts(
        connect=min(defaults.connect, timeout) if timeout else defaults.connect,
        management=timeout or defaults.management,
        inference=timeout or inference_timeout or defaults.inference,
    )
    return NimClient(resolve_url(url), api_key=api_key, timeouts=timeouts)
