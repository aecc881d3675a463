"""Inspection commands on a running server: tokenize, detokenize, render and models.

The management ones (metadata, version, license, manifest, metrics) are in ``info.py``.
Library imports happen inside the commands: ``nimctl --help`` must not pay for them.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from nimctl.cli._common import (
    FormatOption,
    ImageOption,
    ModelOption,
    SystemOption,
    output,
    read_text_argument,
)
from nimctl.cli._target import ApiKeyOption, TimeoutOption, UrlOption, make_client
from nimctl.errors import UnreadableAnswerError, UsageError
from nimctl.output import Format


def register(app: typer.Typer) -> None:
    app.command("tokenize")(tokenize)
    app.command("detokenize")(detokenize)
    app.command("render")(render)
    app.command("models")(models)


def tokenize(
    ctx: typer.Context,
    text: Annotated[
        str | None, typer.Argument(help="Text to tokenize ('-' or nothing: standard input).")
    ] = None,
    strs: Annotated[bool, typer.Option("--strs", help="Show each token's string.")] = False,
    model: ModelOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Turn text into the model's token ids (and count them)."""
    out = output(ctx, fmt)
    prompt = read_text_argument(text, "text")
    with make_client(url, api_key, timeout=timeout) as client:
        result = client.tokenize(prompt, model=model)

    def show() -> None:
        limit = f" (max model length {result.max_model_len})" if result.max_model_len else ""
        out.text(f"count: {result.count}{limit}")
        if strs:
            token_strs = result.token_strs or [""] * len(result.tokens)
            rows = [
                (i, token, repr(s))
                for i, (token, s) in enumerate(zip(result.tokens, token_strs, strict=False))
            ]
            out.table(["#", "ID", "TOKEN"], rows)
        else:
            out.text("ids: " + " ".join(str(token) for token in result.tokens))

    out.result(
        {
            "count": result.count,
            "max_model_len": result.max_model_len,
            "tokens": result.tokens,
            "token_strs": result.token_strs,
        },
        show,
    )


def detokenize(
    ctx: typer.Context,
    ids: Annotated[list[int], typer.Argument(help="Token ids.", show_default=False)],
    model: ModelOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Turn token ids back into text."""
    out = output(ctx, fmt)
    with make_client(url, api_key, timeout=timeout) as client:
        result = client.detokenize(list(ids), model=model)
    out.result({"prompt": result.prompt}, lambda: out.text(result.prompt))


def render(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Argument(help="The user's message ('-': standard input).")] = None,
    system: SystemOption = None,
    image: ImageOption = None,
    messages_file: Annotated[
        str | None,
        typer.Option(
            "--messages", help="A JSON file (or '-') holding the whole OpenAI messages list instead."
        ),
    ] = None,
    model: ModelOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Show the prompt text the model's chat template makes of messages (nothing is generated)."""
    out = output(ctx, fmt)
    messages = _render_messages(text, system, image or [], messages_file)
    with make_client(url, api_key, timeout=timeout) as client:
        result = client.render(messages, model=model)
    if result.prompt is None and not out.is_json:
        raise UnreadableAnswerError(
            "the server's render answer has no prompt text", hint="--format json shows what it sent"
        )
    out.result(result.raw(), lambda: out.text(result.prompt or ""))


def _render_messages(
    text: str | None, system: str | None, images: list[str], messages_file: str | None
) -> list[dict[str, Any]]:
    from nimctl.client.images import image_to_url, user_message

    if messages_file is not None:
        if text is not None or system or images:
            raise UsageError(
                "--messages replaces the text, --system and --image", hint="use one or the other"
            )
        return _load_messages(messages_file)
    question = user_message(read_text_argument(text, "message"), [image_to_url(ref) for ref in images])
    return ([{"role": "system", "content": system}] if system else []) + [question]


def _load_messages(source: str) -> list[dict[str, Any]]:
    import json
    from pathlib import Path

    try:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        messages = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from None
    if isinstance(messages, dict) and "messages" in messages:
        messages = messages["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise UsageError(f"{source} must hold a list of message objects", hint='like [{"role": "user", ...}]')
    return messages


def models(
    ctx: typer.Context,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List the models the server serves."""
    out = output(ctx, fmt)
    with make_client(url, api_key, timeout=timeout) as client:
        cards = client.models()
    out.result(
        [card.raw() for card in cards],
        lambda: out.table(
            ["ID", "MAX MODEL LEN", "ROOT", "OWNED BY"],
            [(c.id, c.max_model_len, c.root, c.owned_by) for c in cards],
        ),
    )
