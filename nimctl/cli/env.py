"""``nimctl env NAME``: the variables that point OpenAI's clients (and SDKs) at an instance."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from nimctl.cli._common import output

# What an OpenAI client needs as its key when the instance wants none (it refuses an empty one).
NO_KEY = "none"


def env(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name (as `nimctl ps` shows it).", show_default=False)],
) -> None:
    """Print shell lines that point OpenAI clients at instance NAME: eval "$(nimctl env NAME)"."""
    from nimctl.runtime.credentials import load
    from nimctl.runtime.manage import find_instance

    found = find_instance(name)
    try:
        url = found.handle.to_instance().url
    finally:
        found.close()
    credentials = load(name)
    key = credentials.api_key() if credentials is not None else None
    lines = [
        f"export OPENAI_BASE_URL={shlex.quote(url.rstrip('/') + '/v1')}",
        f"export OPENAI_API_KEY={shlex.quote(key or NO_KEY)}",
    ]
    if credentials is not None and credentials.ca_file.is_file():
        # httpx (under the openai package) and requests trust these CAs instead of the system's.
        lines.append(f"export SSL_CERT_FILE={shlex.quote(str(credentials.ca_file))}")
        if credentials.client_cert.is_file():
            lines.append(
                f"# mutual TLS: the client certificate is {shlex.quote(str(credentials.client_cert))}"
                f" (key {shlex.quote(str(credentials.client_key))})"
            )
    output(ctx).text("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command("env")(env)
