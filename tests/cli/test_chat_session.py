"""The interactive chat session, driven through a pseudo-terminal as a person would."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.images import png_bytes
from tests.server_process import ServerProcess, engine_metric

pytestmark = pytest.mark.engine

PROMPT = ">>>"  # prompt_toolkit draws the trailing space as a cursor move


def requests_running(url: str) -> float:
    return engine_metric(url, "vllm:num_requests_running")


def spawn_session(url: str, tmp_path: Path, *args: str) -> pexpect.spawn:
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "TERM": "xterm",
        "NIMCTL_STATE_DIR": str(tmp_path / "state"),  # the history file goes there
        # pexpect does not answer prompt_toolkit's cursor-position query; without this it waits for it.
        "PROMPT_TOOLKIT_NO_CPR": "1",
    }
    child = pexpect.spawn(
        sys.executable,
        ["-m", "nimctl", "chat", "--url", url, *args],
        env=env,
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
    )
    child.expect_exact("Ctrl-D to leave")
    child.expect_exact(PROMPT)
    return child


def test_question_image_cancel_and_exit(nim_server: ServerProcess, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes())
    child = spawn_session(nim_server.url, tmp_path, "--max-tokens", "6", "--stats")
    try:
        child.sendline("hello")
        child.expect_exact("time to first token")  # --stats line after the reply
        child.expect_exact(PROMPT)

        child.sendline(f"/image {image}")
        child.expect_exact("image attached (1 waiting for your next message)")
        child.expect_exact(PROMPT)
        child.sendline("what is in the picture?")
        child.expect_exact("time to first token")
        child.expect_exact(PROMPT)

        child.sendline(f"/image {tmp_path / 'missing.png'}")
        child.expect_exact("Error: image not found")
        child.expect_exact(PROMPT)

        child.sendline("/system answer in one word")
        child.expect_exact("system prompt set: answer in one word")
        child.expect_exact(PROMPT)

        child.sendline("/nonsense")
        child.expect_exact("unknown command /nonsense")
        child.expect_exact(PROMPT)
        child.send("\x1b[A")  # the up arrow brings the last line back...
        child.send("\r")  # ...and Enter sends it again
        child.expect_exact("unknown command /nonsense")
        child.expect_exact(PROMPT)

        child.send("first line")
        child.send("\x1b\r")  # Alt+Enter: a new line in the same question
        child.send("second line\r")
        child.expect_exact("time to first token")
        child.expect_exact(PROMPT)

        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    history = (tmp_path / "state" / "chat_history").read_text()
    assert "+hello" in history and "+/nonsense" in history
    assert "+first line\n+second line\n" in history  # one entry of two lines, sent as one question


def test_ctrl_c_cancels_the_reply_and_keeps_the_session(nim_server: ServerProcess, tmp_path: Path) -> None:
    # ignore_eos holds the reply open for all 2000 tokens, whatever the random weights sample.
    child = spawn_session(nim_server.url, tmp_path, "--max-tokens", "2000", "--param", "ignore_eos=true")
    try:
        child.sendline("tell me a very long story")
        # The reply is under way once the engine runs the request (the terminal's echo says nothing).
        deadline = time.monotonic() + 60
        while requests_running(nim_server.url) < 1:
            assert time.monotonic() < deadline, "the question never reached the engine"
            time.sleep(0.05)  # polling the engine's own gauge until the deadline
        child.sendcontrol("c")
        child.expect_exact("[reply cancelled]")
        child.expect_exact(PROMPT)
        # The request was closed: the engine stops working on it long before it would have finished.
        deadline = time.monotonic() + 30
        while requests_running(nim_server.url) > 0:
            assert time.monotonic() < deadline, "the engine still runs the cancelled request"
            time.sleep(0.2)  # polling the engine's own gauge until the deadline

        child.sendline("/stats")
        child.expect_exact("stats on")
        child.expect_exact(PROMPT)
        child.sendline("/clear")
        child.expect_exact("conversation cleared")
        child.expect_exact(PROMPT)
        child.sendcontrol("d")  # Ctrl-D leaves
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
