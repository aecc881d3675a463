"""``nimctl chat --json-schema/--json/--regex/--choice/--grammar`` against a stand-in server.

A unit test of the CLI layer: what the request carries, and what nimctl does with a reply that
breaks the constraint (exit 7). The stand-in answers a fixed text, as an engine that ignores the
structured-output fields would; the real engine's side is tests/cli/test_chat_structured.py.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pexpect
import pytest

from nimctl.errors import EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE
from tests.cli.conftest import error_line, nimctl
from tests.json_http import send_json


@dataclass
class StandIn:
    url: str
    reply: str = "hello"
    finish_reason: str = "stop"
    requests: list[dict[str, Any]] = field(default_factory=list)


def _handler(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            stand_in.requests.append(body)
            if not body.get("stream"):
                message = {"role": "assistant", "content": stand_in.reply}
                choice = {"index": 0, "message": message, "finish_reason": stand_in.finish_reason}
                send_json(
                    self, 200, {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            half = len(stand_in.reply) // 2
            pieces = [(stand_in.reply[:half], None), (stand_in.reply[half:], stand_in.finish_reason)]
            for text, finish in pieces:
                choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
                self.wfile.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    stand_in = StandIn("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stand_in))
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()


def chat(stand_in: StandIn, reply: str, *args: str, finish: str = "stop", input: str | None = None) -> Any:
    stand_in.reply, stand_in.finish_reason = reply, finish
    stand_in.requests.clear()
    return nimctl("chat", *args, "--model", "m", "--url", stand_in.url, input=input)


def test_each_flag_sends_the_engine_fields(stand_in: StandIn, tmp_path: Path) -> None:
    grammar = tmp_path / "yn.gbnf"
    grammar.write_text('root ::= "yes" | "no"', encoding="utf-8")
    cases = [
        (["--json-schema", '{"type": "object"}'], "{}", "response_format"),
        (["--json"], "{}", "response_format"),
        (["--regex", "[a-z]+"], "abc", "structured_outputs"),
        (["--choice", "yes,no"], "no", "structured_outputs"),
        (["--grammar", str(grammar)], "whatever", "structured_outputs"),
    ]
    for flags, reply, key in cases:
        result = chat(stand_in, reply, "hi", *flags, "--no-stream")
        assert result.exit_code == EXIT_OK, (flags, result.stderr)
        (request,) = stand_in.requests
        assert key in request and request["messages"][-1]["content"] == "hi"
    assert stand_in.requests[0]["structured_outputs"] == {"grammar": 'root ::= "yes" | "no"'}


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_a_mismatch_is_exit_7_after_the_reply(stand_in: StandIn, stream: str) -> None:
    result = chat(stand_in, "not json", "hi", "--json", stream)
    assert result.exit_code == EXIT_SERVER_ERROR
    assert result.stdout == "not json\n"  # the reply is shown; the error line says what is wrong with it
    assert error_line(result).startswith("Error: the reply does not match --json: not JSON")
    assert "did not keep the constraint" in result.stderr


def test_stdin_and_a_cut_reply(stand_in: StandIn) -> None:
    result = chat(stand_in, "abc-1", "--regex", "[a-z]{3}-[0-9]{2}", finish="length", input="a question\n")
    assert result.exit_code == EXIT_SERVER_ERROR
    assert stand_in.requests[0]["messages"][-1]["content"] == "a question"
    assert error_line(result) == (
        "Error: the reply does not match --regex: 'abc-1' is not a full match of '[a-z]{3}-[0-9]{2}'"
    )
    assert "cut at the token limit (finish_reason length): raise --max-tokens" in result.stderr


def test_format_json_prints_the_answer_and_the_verdict(stand_in: StandIn) -> None:
    schema = '{"type": "object", "required": ["name"]}'
    result = chat(stand_in, '{"nam": 1}', "hi", "--json-schema", schema, "--format", "json")
    assert result.exit_code == EXIT_SERVER_ERROR
    body = json.loads(result.stdout)
    assert body["choices"][0]["message"]["content"] == '{"nam": 1}'
    assert body["structured_check"] == {
        "flag": "--json-schema",
        "matches": False,
        "problem": "'name' is a required property",
    }
    assert "Error: the reply does not match --json-schema: 'name' is a required property" in result.stderr

    good = chat(stand_in, "green", "hi", "--choice", "red,green", "--format", "json")
    assert good.exit_code == EXIT_OK
    assert json.loads(good.stdout)["structured_check"] == {
        "flag": "--choice",
        "matches": True,
        "problem": None,
    }
    plain = chat(stand_in, "green", "hi", "--format", "json")
    assert "structured_check" not in json.loads(plain.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--regex", "a", "--choice", "a"], "--regex and --choice cannot be used together"),
        (["--json", "--grammar", "x.gbnf"], "--json and --grammar cannot be used together"),
        (["--regex", "(a"], "is not a valid regular expression"),
        (["--choice", ","], "has an empty choice"),
        (["--json-schema", '{"type": "nothing"}'], "is not a valid JSON schema"),
        (["--json", "--param", 'structured_outputs={"regex": "a"}'], "--param structured_outputs cannot be"),
        (["--regex", "a", "--param", 'response_format={"type": "json_object"}'], "--param response_format"),
    ],
)
def test_usage_errors_send_nothing(stand_in: StandIn, args: list[str], message: str) -> None:
    result = chat(stand_in, "x", "hi", *args)
    assert result.exit_code == EXIT_USAGE, result.stderr
    assert message in error_line(result) and "Hint:" in result.stderr
    assert stand_in.requests == []


def test_interactive_session_checks_each_reply(stand_in: StandIn, tmp_path: Path) -> None:
    stand_in.reply, stand_in.finish_reason = "maybe", "stop"
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "TERM": "xterm",
        "NIMCTL_STATE_DIR": str(tmp_path / "state"),
        "PROMPT_TOOLKIT_NO_CPR": "1",
    }
    args = ["-m", "nimctl", "chat", "--url", stand_in.url, "--model", "m", "--choice", "yes,no"]
    child = pexpect.spawn(sys.executable, args, env=env, encoding="utf-8", timeout=60, dimensions=(40, 200))
    try:
        child.expect_exact(">>>")
        child.sendline("first")
        child.expect_exact("Error: the reply does not match --choice: 'maybe' is not one of 'yes', 'no'")
        child.expect_exact(">>>")  # the session goes on
        stand_in.reply = "yes"
        child.sendline("second")
        child.expect_exact("yes")
        child.expect_exact(">>>")
        assert "Error" not in (child.before or "")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert [request["structured_outputs"] for request in stand_in.requests] == [{"choice": ["yes", "no"]}] * 2
