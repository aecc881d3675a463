"""``nimctl chat``: one question from the argument or stdin, or an interactive session."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nimctl.cli._common import (
    FormatOption,
    ImageOption,
    ModelOption,
    SystemOption,
    output,
    read_text_argument,
)
from nimctl.cli._reply import print_streamed_reply
from nimctl.cli._target import ApiKeyOption, TimeoutOption, UrlOption, make_client
from nimctl.errors import UsageError
from nimctl.output import Format

if TYPE_CHECKING:
    from nimctl.client.conversation import Conversation
    from nimctl.output import Output


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)


def chat(
    ctx: typer.Context,
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="The question ('-': standard input). Without it: standard input when piped, "
            "else an interactive session."
        ),
    ] = None,
    image: ImageOption = None,
    system: SystemOption = None,
    model: ModelOption = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Longest reply, in tokens.", show_default=False)
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", min=0.0, help="Sampling temperature.", show_default=False)
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampling seed.", show_default=False)] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            metavar="KEY=VALUE",
            help="Another request field, its value read as JSON (repeatable): top_k=40, stop='[\"END\"]', "
            "ignore_eos=true...",
            show_default=False,
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Print the reply as it arrives.")
    ] = True,
    stats: Annotated[
        bool, typer.Option("--stats", help="After each reply: time to first token, tokens/s, token counts.")
    ] = False,
    json_schema: Annotated[
        str | None,
        typer.Option(
            "--json-schema",
            metavar="FILE|JSON",
            help="The reply is JSON that keeps this schema (a file, or inline JSON); checked, else exit 7.",
            show_default=False,
        ),
    ] = None,
    json_object: Annotated[
        bool,
        typer.Option("--json", help="The reply is a JSON object; checked, else exit 7."),
    ] = False,
    regex: Annotated[
        str | None,
        typer.Option(
            "--regex",
            metavar="PATTERN",
            help="The whole reply matches this regular expression; checked, else exit 7.",
            show_default=False,
        ),
    ] = None,
    choice: Annotated[
        str | None,
        typer.Option(
            "--choice",
            metavar="A,B,C",
            help="The reply is one of these comma-separated choices; checked, else exit 7.",
            show_default=False,
        ),
    ] = None,
    grammar: Annotated[
        Path | None,
        typer.Option(
            "--grammar",
            metavar="FILE",
            help="The reply keeps this grammar (GBNF-style EBNF, or Lark); not checked client-side.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Chat with the served model. Streams the reply; --format json prints the whole response object."""
    from nimctl.client.conversation import Conversation
    from nimctl.client.structured import build_constraint

    out = output(ctx, fmt)
    # A bad schema, regex, choice list or grammar is refused before anything is sent.
    constraint = build_constraint(
        json_schema=json_schema, json_object=json_object, regex=regex, choice=choice, grammar=grammar
    )
    interactive = prompt is None and sys.stdin.isatty()
    if interactive and out.is_json:
        raise UsageError(
            "--format json needs a prompt (an argument or standard input)",
            hint='nimctl chat "your question" --format json',
        )
    client = make_client(url, api_key, timeout=timeout)
    with client:
        talk = Conversation(
            client,
            model or "",
            system=system,
            params=request_params(
                {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}, param or []
            ),
            constraint=constraint,
        )
        # Bad images are refused before anything is sent, even before the model is looked up.
        for ref in image or []:
            talk.attach_image(ref)
        question = None if interactive else _one_shot_text(prompt)
        talk.model = model or client.default_model()
        if question is None:
            from nimctl.cli.chat_session import run_session

            run_session(out, talk, stream=stream, show_stats=stats)
        else:
            _answer_once(out, talk, question, stream=stream, show_stats=stats)


# Fields nimctl fills itself (a --param for one would break the request or the printing), and what sets them.
_OWN_FIELDS = {
    "model": "--model chooses the model",
    "messages": "the prompt, --system and --image make the messages",
    "stream": "--stream/--no-stream chooses streaming",
    "stream_options": "a streamed reply always asks for its token counts",
    "n": "nimctl chat prints one reply per question",
}


def request_params(options: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """The options that were given, plus each ``--param KEY=VALUE`` (the value read as JSON, else as text)."""
    params = {key: value for key, value in options.items() if value is not None}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")  # max-tokens is max_tokens, as the options spell it
        if not sep or not key or not raw.strip():
            raise UsageError(f"--param {pair!r} is not KEY=VALUE", hint="e.g. --param top_k=40")
        if key in _OWN_FIELDS:
            message = f"--param cannot set {key!r}: nimctl chat fills it itself"
            raise UsageError(message, hint=_OWN_FIELDS[key])
        if key in params:
            flag = "--" + key.replace("_", "-")
            source = flag if key in options else f"an earlier --param {key}"
            raise UsageError(f"--param {key} repeats {source}", hint="give each field once")
        try:
            params[key] = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        except _NotFiniteError:
            hint = "JSON has no NaN or Infinity"
            raise UsageError(f"--param {key}: {raw} is not a finite number", hint=hint) from None
        except ValueError:
            params[key] = raw  # a bare word such as stop=END is meant as text
    return params


class _NotFiniteError(ValueError):
    pass


def _no_constant(name: str) -> float:
    raise _NotFiniteError(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise _NotFiniteError(text)
    return value


def _one_shot_text(prompt: str | None) -> str:
    text = read_text_argument(prompt, "question")
    if not text.strip():
        raise UsageError("the prompt is empty", hint="pass a question as an argument or on standard input")
    return text


def _answer_once(out: Output, talk: Conversation, question: str, *, stream: bool, show_stats: bool) -> None:
    if out.is_json:
        completion = talk.ask(question)
        data = completion.raw()
        if show_stats and talk.last_stats is not None:
            data["stats"] = talk.last_stats.as_dict()
        # The whole answer is printed as it came; the check adds its verdict and decides the exit code.
        check = talk.constraint.check(completion.text) if talk.constraint is not None else None
        if check is not None:
            data["structured_check"] = check.as_dict()
        out.json(data)
        if check is not None and check.matches is False:
            from nimctl.client.structured import mismatch_error

            raise mismatch_error(check, talk.last_finish_reason)
        return
    if stream:
        print_streamed_reply(out, talk, question)
    else:
        out.text(talk.ask(question).text)
    if show_stats and talk.last_stats is not None:
        out.info(talk.last_stats.summary())
    talk.check_last_reply()
