"""``nimctl chat`` against the real tiny VLM: one-shot, stdin, streaming, images, stats, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nimctl.errors import EXIT_OK
from tests.cli.conftest import nimctl
from tests.images import png_bytes
from tests.server_process import ServerProcess

pytestmark = pytest.mark.engine


def chat(*args: str, input: str | None = None) -> tuple[str, str]:
    result = nimctl("chat", *args, input=input)
    assert result.exit_code == EXIT_OK, f"exit {result.exit_code}: {result.stderr}"
    return result.stdout, result.stderr


def test_one_shot_argument(nim_server: ServerProcess) -> None:
    # ignore_eos: eight tokens of text even if the random weights would stop at once.
    args = ("hello there", "--max-tokens", "8", "--seed", "1", "--param", "ignore_eos=true", "--url", nim_server.url)
    out, _ = chat(*args)
    again, _ = chat(*args, "--no-stream")
    assert out.endswith("\n") and len(out) > 1
    assert again == out  # the same seed: streamed and whole replies agree


def test_one_shot_stdin(nim_server: ServerProcess) -> None:
    def prompt_tokens(*args: str, input: str | None = None) -> int:
        out, _ = chat(*args, "--max-tokens", "2", "--format", "json", "--url", nim_server.url, input=input)
        return json.loads(out)["usage"]["prompt_tokens"]

    alone = prompt_tokens("summarise: a long text")
    assert prompt_tokens(input="summarise: a long text\n") == alone  # no argument: stdin is the question
    assert prompt_tokens("-", input="summarise: a long text\n") == alone  # '-' says so
    # An argument leaves stdin alone: `while read q; do nimctl chat "$q"; done < file` keeps its file.
    assert prompt_tokens("summarise: a long text", input="more and more text " * 20) == alone


def test_json_is_the_whole_response(nim_server: ServerProcess) -> None:
    out, _ = chat("hi", "--max-tokens", "5", "--format", "json", "--url", nim_server.url)
    body = json.loads(out)
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "chat.completion" and body["model"] == "tiny-vlm"
    assert body["usage"]["completion_tokens"] <= 5
    assert "stats" not in body


def test_param_reaches_the_engine(nim_server: ServerProcess) -> None:
    def completion_tokens(*args: str) -> int:
        out, _ = chat("hi", *args, "--format", "json", "--url", nim_server.url)
        return int(json.loads(out)["usage"]["completion_tokens"])

    # vLLM's own sampling field ignore_eos runs the reply to its limit, whatever the weights sample.
    assert completion_tokens("--max-tokens", "24", "--param", "ignore_eos=true") == 24
    # Any request field goes through, max_tokens itself included; JSON values keep their types.
    assert completion_tokens("--param", "max_tokens=5", "--param", "ignore_eos=true") == 5


def test_stats(nim_server: ServerProcess) -> None:
    _, err = chat("hi", "--max-tokens", "6", "--stats", "--url", nim_server.url)
    assert "time to first token" in err and "tokens/s" in err
    assert "prompt " in err and "completion " in err and "? tokens" not in err
    body = json.loads(chat("hi", "--max-tokens", "6", "--stats", "--format", "json", "--url", nim_server.url)[0])
    stats = body["stats"]
    assert set(stats) == {"time_to_first_token_s", "total_s", "tokens_per_s", "prompt_tokens", "completion_tokens"}
    assert stats["completion_tokens"] == body["usage"]["completion_tokens"]
    assert stats["total_s"] > 0


def test_system_prompt_reaches_the_template(nim_server: ServerProcess) -> None:
    def prompt_tokens(system: str) -> int:
        out, _ = chat("hi", "--system", system, "--max-tokens", "2", "--format", "json", "--url", nim_server.url)
        return int(json.loads(out)["usage"]["prompt_tokens"])

    short, long = prompt_tokens("be brief"), prompt_tokens("be brief, " * 20)
    assert long > short


def test_image_chat(nim_server: ServerProcess, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes())
    with_image = json.loads(chat("what is this?", "--image", str(image), "--max-tokens", "4", "--format", "json",
                                 "--url", nim_server.url)[0])
    without = json.loads(chat("what is this?", "--max-tokens", "4", "--format", "json", "--url", nim_server.url)[0])
    # The image became image tokens in the prompt.
    assert with_image["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"]
    out, _ = chat("what is this?", "--image", str(image), "--max-tokens", "4", "--url", nim_server.url)
    assert out.endswith("\n")  # the reply is gibberish, possibly only whitespace: its presence is the point


def test_streaming_prints_before_the_reply_ends(nim_server: ServerProcess) -> None:
    """Read the real process's stdout as it comes: text must arrive in several pieces over time."""
    # ignore_eos: all 200 tokens come, whatever the random weights sample.
    command = [sys.executable, "-m", "nimctl", "chat", "tell me a story", "--max-tokens", "200",
               "--param", "ignore_eos=true", "--url", nim_server.url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "NO_COLOR": "1"})
    assert process.stdout is not None
    arrivals: list[tuple[float, bytes]] = []

    def reader() -> None:
        assert process.stdout is not None
        while chunk := os.read(process.stdout.fileno(), 4096):
            arrivals.append((time.monotonic(), chunk))

    thread = threading.Thread(target=reader)
    thread.start()
    process.wait(timeout=300)
    thread.join(timeout=10)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    text_arrivals = [at for at, chunk in arrivals if chunk.strip()]
    assert len(text_arrivals) >= 2, f"the reply came in one piece: {arrivals!r}"
    assert text_arrivals[0] < text_arrivals[-1]
