"""`nimctl top`: one frame without a terminal, and the full screen under a pseudo-terminal against
the session's real engine with load running (the figures move; q and Ctrl-C quit, exit 0, and
leave the terminal as it was)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pexpect
import pytest

from tests.cli.conftest import nimctl
from tests.cli.live_records import isolated_env, record_instance
from tests.server_process import ServerProcess

HEADLINE = re.compile(rb"requests (\d+) running (\d+) waiting\s+([\d.]+) gen tok/s")
LEAVE_ALTERNATE_SCREEN = b"\x1b[?1049l"


def test_top_without_a_terminal_asks_for_once(tmp_path: Path) -> None:
    result = nimctl("top", env=isolated_env(tmp_path / "state"))
    assert result.exit_code == 2
    assert "needs a terminal" in result.stderr and "nimctl top --once" in result.stderr


def test_once_prints_one_frame_in_plain_text(tmp_path: Path) -> None:
    result = nimctl("top", "--once", "--interval", "0.2", env=isolated_env(tmp_path / "state"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("nimctl top ")
    assert "no instances running" in result.stdout and "GPUs: " in result.stdout
    assert "\x1b[" not in result.stdout  # a pipe gets no escape sequences


def test_once_as_json_reports_an_instance_that_does_not_answer(tmp_path: Path) -> None:
    import socket

    state = tmp_path / "state"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        record_instance(state, "i17top-silent", f"http://127.0.0.1:{silent.getsockname()[1]}", os.getpid())
        result = nimctl("top", "--once", "--interval", "0.2", "--format", "json", env=isolated_env(state))
    assert result.exit_code == 0, result.stderr
    frame = json.loads(result.stdout)
    [row] = frame["instances"]
    assert row["name"] == "i17top-silent" and row["live_error"] == "timeout" and row["interval"] is None
    assert frame["gpus"] == [] or frame["gpus"] is None or isinstance(frame["gpus"], list)


@pytest.fixture
def top_env(tmp_path: Path, nim_server: ServerProcess) -> dict[str, str]:
    assert nim_server.process is not None
    state = tmp_path / "state"
    record_instance(state, "i17top-real", nim_server.url, nim_server.process.pid)
    env = {**os.environ, **isolated_env(state), "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)  # the terminal's own size
    env.pop("NO_COLOR", None)
    return env


def spawn_top(env: dict[str, str]) -> pexpect.spawn:
    # SIGINT back to its default: a test run started in the background by a shell without job
    # control inherits it ignored, and Python then never raises KeyboardInterrupt.
    return pexpect.spawn(
        sys.executable,
        ["-m", "nimctl", "top", "--interval", "0.5"],
        env=env,
        dimensions=(40, 240),
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def lflag(child: pexpect.spawn) -> int:
    """The terminal's local modes, as the program on its other side has set them."""
    return int(termios.tcgetattr(child.child_fd)[3])


@pytest.fixture
def load(nim_server: ServerProcess) -> Iterator[threading.Event]:
    """Set the event to start two streams of long generations; they stop (the streams closed, so the
    engine aborts them) when the test ends."""
    start, stop = threading.Event(), threading.Event()
    client = openai.OpenAI(base_url=nim_server.url + "/v1", api_key="not-used", max_retries=0, timeout=120)

    def generate() -> None:
        start.wait()
        while not stop.is_set():
            stream = client.completions.create(
                model="tiny-vlm", prompt="Once upon a time", max_tokens=2000, stream=True,
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            with stream:
                for _chunk in stream:
                    if stop.is_set():
                        break

    threads = [threading.Thread(target=generate, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        yield start
    finally:
        stop.set()
        start.set()
        for thread in threads:
            thread.join(30)


def read_headline(child: pexpect.spawn) -> tuple[int, int, float]:
    child.expect(HEADLINE)
    match = child.match
    assert match is not None
    return int(match.group(1)), int(match.group(2)), float(match.group(3))


@pytest.mark.engine
def test_top_under_a_terminal_shows_the_figures_move_and_q_quits(
    top_env: dict[str, str], load: threading.Event
) -> None:
    normal = lflag_of_new_terminal(top_env)
    child = spawn_top(top_env)
    try:
        first = read_headline(child)  # before the load (0 running, unless an earlier test's is ending)
        assert not lflag(child) & termios.ICANON and not lflag(child) & termios.ECHO  # cbreak while it runs
        load.set()
        deadline = time.monotonic() + 60
        seen: list[tuple[int, int, float]] = []
        while time.monotonic() < deadline:
            seen.append(read_headline(child))
            if seen[-1][0] >= 1 and seen[-1][2] > 0:
                break
        assert seen and seen[-1][0] >= 1 and seen[-1][2] > 0, f"the figures did not move: {seen[-10:]}"
        assert seen[-1] != first
        child.expect(rb"i17top-real")
        child.send("q")
        child.expect(pexpect.EOF, timeout=20)
        output = child.before or b""
        assert lflag(child) & (termios.ICANON | termios.ECHO) == normal & (termios.ICANON | termios.ECHO)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.signalstatus
    assert LEAVE_ALTERNATE_SCREEN in output


@pytest.mark.engine
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_top_quits_cleanly_on_ctrl_c_or_sigterm(top_env: dict[str, str], how: str) -> None:
    normal = lflag_of_new_terminal(top_env)
    child = spawn_top(top_env)
    try:
        read_headline(child)
        read_headline(child)  # a second frame: the loop runs
        if how == "ctrl-c":
            child.sendintr()  # the terminal's interrupt character: SIGINT to top, as a user's Ctrl-C
        else:
            child.kill(signal.SIGTERM)  # `timeout nimctl top`, a kill
        child.expect(pexpect.EOF, timeout=20)
        output = child.before or b""
        assert lflag(child) & (termios.ICANON | termios.ECHO) == normal & (termios.ICANON | termios.ECHO)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.signalstatus
    assert LEAVE_ALTERNATE_SCREEN in output and b"Traceback" not in output


def lflag_of_new_terminal(env: dict[str, str]) -> int:
    """A fresh pseudo-terminal's local modes, before any program changed them."""
    probe = pexpect.spawn(sys.executable, ["-c", "import time; time.sleep(5)"], env=env)
    try:
        return lflag(probe)
    finally:
        probe.close(force=True)
