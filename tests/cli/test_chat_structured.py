"""Structured output against the real engine: the tiny model's random weights keep each constraint.

The model's weights are random, so a reply that keeps a schema, a regex, a list of choices or a
grammar shows that the engine enforced it (vLLM 0.32's "auto" backend picks xgrammar here). Only the
structure of a reply is asserted, never its content. Seeds and a temperature make each reply the
same on every run, so the JSON ones end inside their token limit (found by trying seeds: a random
model fills a JSON object with whitespace, which the JSON grammar allows, until the limit).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import openai
import pexpect
import pytest
from openai import OpenAI

from nimctl.errors import EXIT_OK, EXIT_SERVER_ERROR
from tests.cli.conftest import error_line, nimctl
from tests.server_process import ServerProcess

pytestmark = pytest.mark.engine

SAMPLING = ("--temperature", "1", "--seed", "3")
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": False,
}
CODE = "[a-z]{3}-[0-9]{2}"
GRAMMAR = 'root ::= "yes" | "no" | ("n" [0-9] [0-9])\n'  # xgrammar's EBNF, as llama.cpp's GBNF
GRAMMAR_REPLY = re.compile("yes|no|n[0-9][0-9]")


def replies(url: str, *args: str) -> list[str]:
    """The reply in each mode: argument streamed, argument whole, stdin, and --format json."""
    texts = []
    for mode, stdin in (
        (["hi"], None),
        (["hi", "--no-stream"], None),
        ([], "hi\n"),
        (["hi", "--format", "json"], None),
    ):
        result = nimctl("chat", *mode, *args, "--url", url, input=stdin)
        assert result.exit_code == EXIT_OK, f"{mode}: exit {result.exit_code}: {result.stderr}"
        if "--format" in mode:
            body = json.loads(result.stdout)
            assert body["choices"][0]["finish_reason"] == "stop"
            assert body["structured_check"]["matches"] is not False
            texts.append(body["choices"][0]["message"]["content"])
        else:
            assert result.stdout.endswith("\n")
            texts.append(result.stdout[:-1])
    return texts


def test_json_schema(nim_server: ServerProcess, tmp_path: Path) -> None:
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON), encoding="utf-8")
    for text in replies(nim_server.url, "--json-schema", str(schema), "--max-tokens", "300", *SAMPLING):
        person = json.loads(text)
        assert set(person) == {"name", "age", "ok"}
        assert isinstance(person["name"], str) and len(person["name"]) <= 8
        assert type(person["age"]) is int and type(person["ok"]) is bool


def test_json_object(nim_server: ServerProcess) -> None:
    for text in replies(nim_server.url, "--json", "--max-tokens", "100", "--temperature", "1", "--seed", "5"):
        assert isinstance(json.loads(text), dict)


def test_regex(nim_server: ServerProcess) -> None:
    for text in replies(nim_server.url, "--regex", CODE, "--max-tokens", "20", *SAMPLING):
        assert re.fullmatch(CODE, text)


def test_choice(nim_server: ServerProcess) -> None:
    for seed in ("1", "2"):
        for text in replies(
            nim_server.url, "--choice", "red,green,blue", "--temperature", "1", "--seed", seed
        ):
            assert text in ("red", "green", "blue")


def test_grammar(nim_server: ServerProcess, tmp_path: Path) -> None:
    grammar = tmp_path / "answer.gbnf"
    grammar.write_text(GRAMMAR, encoding="utf-8")
    for text in replies(nim_server.url, "--grammar", str(grammar), "--max-tokens", "20", *SAMPLING):
        assert GRAMMAR_REPLY.fullmatch(text)  # checked here: nimctl cannot check a grammar itself


def test_a_reply_cut_at_max_tokens_is_exit_7(nim_server: ServerProcess) -> None:
    # One token cannot hold six characters of the pattern: the engine's reply is a prefix of a match.
    result = nimctl("chat", "hi", "--regex", CODE, "--max-tokens", "1", *SAMPLING, "--url", nim_server.url)
    assert result.exit_code == EXIT_SERVER_ERROR, result.stderr
    assert error_line(result).startswith("Error: the reply does not match --regex: ")
    assert "cut at the token limit (finish_reason length): raise --max-tokens" in result.stderr


def test_official_client(nim_server: ServerProcess) -> None:
    client = OpenAI(base_url=nim_server.url + "/v1", api_key="unused")
    messages = [{"role": "user", "content": "hi"}]
    completion = client.chat.completions.create(
        model="tiny-vlm",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=300,
        temperature=1,
        seed=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    assert set(json.loads(completion.choices[0].message.content or "")) == {"name", "age", "ok"}
    completion = client.chat.completions.create(
        model="tiny-vlm",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=20,
        seed=1,
        extra_body={"structured_outputs": {"regex": CODE}},
    )
    assert re.fullmatch(CODE, completion.choices[0].message.content or "")


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"structured_outputs": {"regex": "(?i)yes|no"}}, "inline flags"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"pattern": "\\p{L}"}},
                }
            },
            "Unicode property classes",
        ),
    ],
)
def test_a_regex_the_engine_would_fail_on_is_a_400(
    nim_server: ServerProcess, extra: dict[str, object], problem: str
) -> None:
    # vLLM 0.32 passes these at validation and fails in its engine core (a 500): the front says 400.
    client = OpenAI(base_url=nim_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny-vlm", messages=[{"role": "user", "content": "hi"}], max_tokens=5, extra_body=extra
        )
    assert problem in str(caught.value)


def test_nim_spelling_reaches_the_engine(nim_server: ServerProcess) -> None:
    # NIM's nvext.guided_* (and vLLM < 0.12's top-level guided_*) are ignored by vLLM 0.32: the front translates.
    client = OpenAI(base_url=nim_server.url + "/v1", api_key="unused", max_retries=0)
    for extra in ({"nvext": {"guided_regex": CODE}}, {"guided_regex": CODE}):
        completion = client.chat.completions.create(
            model="tiny-vlm",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=20,
            temperature=1,
            seed=1,
            extra_body=extra,
        )
        assert re.fullmatch(CODE, completion.choices[0].message.content or ""), extra


def test_interactive_session_keeps_the_constraint(nim_server: ServerProcess, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "TERM": "xterm",
        "NIMCTL_STATE_DIR": str(tmp_path / "state"),
        "PROMPT_TOOLKIT_NO_CPR": "1",  # pexpect does not answer prompt_toolkit's cursor-position query
    }
    args = [
        "-m",
        "nimctl",
        "chat",
        "--url",
        nim_server.url,
        "--choice",
        "red,green,blue",
        "--temperature",
        "1",
    ]
    child = pexpect.spawn(sys.executable, args, env=env, encoding="utf-8", timeout=120, dimensions=(40, 200))
    try:
        child.expect_exact("Ctrl-D to leave")
        child.expect_exact(">>>")
        for question in ("first", "second", "third"):
            child.sendline(question)
            child.expect(r"(red|green|blue)\r\n")  # after the terminal codes prompt_toolkit writes
            child.expect_exact(">>>")
            assert "Error" not in (child.before or "")  # the check's line would come before the prompt
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
