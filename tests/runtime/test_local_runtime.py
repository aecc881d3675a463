"""The local runtime and the readiness wait, with a stand-in server (tests/runtime/fake_nim_serve.py).

The real ``nim-serve`` + vLLM path of ``--runtime local`` is covered end to end in
tests/runtime/test_local_engine.py (marked engine); here each failure mode is cheap to provoke:
a server that exits while starting, one that is never ready, a name already taken, a stop of
something that already ended, an engine that ignores SIGTERM in a session of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from nimctl.errors import EXIT_RUNTIME_FAILED, EXIT_TIMEOUT, EXIT_USAGE
from nimctl.runtime import local_runtime

FAKE = Path(__file__).resolve().parent / "fake_nim_serve.py"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(local_runtime, "_serve_command", lambda: [sys.executable, str(FAKE)])
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "NIMCTL_ASSUME_GPUS": "none",
        "NIMCTL_STATE_DIR": str(tmp_path / "state"),
        "NO_COLOR": "1",
        "DOCKER_HOST": "tcp://127.0.0.1:9",
    }


@pytest.fixture(autouse=True)
def _stop_leftovers(state: Path) -> Iterator[None]:
    yield
    for handle in local_runtime.list_handles():
        local_runtime.stop(handle, timeout=5)


def nimctl(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, argv, env=env)
    return result.exit_code, result.stdout, result.stderr


def run_args(port: int, tmp_path: Path, mode: str, *extra: str) -> list[str]:
    return [
        "run",
        "--runtime",
        "local",
        "-d",
        "--port",
        str(port),
        "--name",
        "fake",
        "--cache",
        str(tmp_path / "cache"),
        "-e",
        f"FAKE_NIM_MODE={mode}",
        "--timeout",
        "20",
        *extra,
    ]


def test_detached_run_ps_logs_stop(state: Path, port: int, env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = nimctl([*run_args(port, tmp_path, "ok"), "--", "--max-model-len", "512"], env)
    assert code == 0, err
    assert f"is ready at http://127.0.0.1:{port}" in out
    assert "nimctl stop fake" in out
    assert "fake: ready" in err

    code, out, _ = nimctl(["ps", "--format", "json"], env)
    assert code == 0
    [row] = json.loads(out)
    assert row["name"] == "fake" and row["runtime"] == "local"
    assert row["state"] == "running" and row["ready"] is True
    assert row["model"] == "tiny-vlm" and row["profile_name"] == "vllm-fp32-tp1-pp1-cpu"
    assert row["url"] == f"http://127.0.0.1:{port}"

    code, out, _ = nimctl(["logs", "fake"], env)
    assert code == 0
    assert "fake nim-serve starting: mode=ok model=builtin://tiny-vlm" in out
    assert "args=['--max-model-len', '512']" in out
    code, out, _ = nimctl(["logs", "fake", "--tail", "1"], env)
    assert len(out.splitlines()) == 1

    code, _, err = nimctl(run_args(port + 1 if port < 65535 else port - 1, tmp_path, "ok"), env)
    assert code == EXIT_USAGE and "the name fake is in use by a local instance" in err

    code, out, _ = nimctl(["stop", "fake"], env)
    assert code == 0 and out.strip() == "fake: stopped and removed"
    assert not (state / "instances" / "fake").exists()
    code, out, _ = nimctl(["ps", "--all", "--format", "json"], env)
    assert json.loads(out) == []
    code, _, err = nimctl(["stop", "fake"], env)
    assert code == EXIT_USAGE and "no local instance named fake" in err


def _write_instance(state: Path, name: str, pid: int, identity: str | None) -> Path:
    folder = state / "instances" / name
    folder.mkdir(parents=True)
    record = {
        "name": name,
        "model": "tiny-vlm",
        "url": "http://127.0.0.1:9",
        "pid": pid,
        "pid_identity": identity,
    }
    (folder / local_runtime.INSTANCE_FILE).write_text(json.dumps(record), encoding="utf-8")
    return folder


def test_a_reused_pid_is_not_our_instance(
    state: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pid from before a reboot, now some other process's (here: this test's own)."""
    own = local_runtime.process_identity(os.getpid())
    assert own is not None
    folder = _write_instance(state, "stale", os.getpid(), own.rsplit(":", 1)[0] + ":1")
    signals: list[tuple[str, int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append(("kill", pid, sig)))
    monkeypatch.setattr(os, "killpg", lambda pid, sig: signals.append(("killpg", pid, sig)))

    code, out, _ = nimctl(["ps", "--format", "json"], env)
    assert code == 0 and json.loads(out) == []
    code, out, _ = nimctl(["ps", "--all", "--format", "json"], env)
    [row] = json.loads(out)
    assert row["name"] == "stale" and row["state"] == "exited"

    code, out, _ = nimctl(["stop", "stale"], env)
    assert code == 0, out
    assert signals == []
    assert not folder.exists()


def test_the_recorded_process_reads_as_running(state: Path) -> None:
    live = _write_instance(state, "live", os.getpid(), local_runtime.process_identity(os.getpid()))
    # A record without an identity (or nimctl before it kept one) cannot be told from a reuse.
    old = _write_instance(state, "old-record", os.getpid(), None)
    try:
        handles = {handle.name: handle for handle in local_runtime.list_handles()}
        assert handles["live"].state() == ("running", None)
        assert handles["old-record"].state()[0] == "exited"
    finally:  # gone before the autouse clean-up, which would stop this very process
        shutil.rmtree(live)
        shutil.rmtree(old)


def test_exit_while_starting(state: Path, port: int, env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = nimctl(run_args(port, tmp_path, "exit"), env)
    assert code == EXIT_RUNTIME_FAILED
    assert "Error: fake exited with code 3 while starting" in err
    assert "Last log lines of fake:" in err and "fatal: the engine could not start" in err
    # Detached: the ended instance stays for ps and logs until stopped.
    code, out, _ = nimctl(["ps", "--all", "--format", "json"], env)
    [row] = json.loads(out)
    assert row["state"] == "exited" and row["exit_code"] == 3 and row["ready"] is None
    code, out, _ = nimctl(["ps", "--format", "json"], env)
    assert json.loads(out) == []
    code, out, _ = nimctl(["logs", "fake"], env)
    assert "fatal: the engine could not start" in out
    code, out, _ = nimctl(["stop", "--all"], env)
    assert out.strip() == "fake: had already exited with code 3; removed"


def test_foreground_failure_leaves_nothing(
    state: Path, port: int, env: dict[str, str], tmp_path: Path
) -> None:
    args = [a for a in run_args(port, tmp_path, "exit") if a != "-d"]
    code, _, err = nimctl(args, env)
    assert code == EXIT_RUNTIME_FAILED and "exited with code 3" in err
    assert not (state / "instances" / "fake").exists()


def test_foreground_unexpected_error_stops_the_instance(
    state: Path, port: int, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nimctl.runtime import manage

    started: list[manage.Started] = []

    def wait_then_fail(run: manage.Started, **_: object) -> float:
        started.append(run)
        raise LookupError("a bug in the readiness wait")

    monkeypatch.setattr(manage, "wait_for", wait_then_fail)
    args = [a for a in run_args(port, tmp_path, "ok") if a != "-d"]
    code, _, err = nimctl(args, env)
    assert code == 1 and "a bug in the readiness wait" in err
    [run] = started
    assert run.handle.state()[0] != "running"
    assert not (state / "instances" / "fake").exists()


def test_timeout_shows_the_last_lines(state: Path, port: int, env: dict[str, str], tmp_path: Path) -> None:
    args = [*run_args(port, tmp_path, "never-ready")]
    args[args.index("--timeout") + 1] = "2"
    code, _, err = nimctl(args, env)
    assert code == EXIT_TIMEOUT
    assert "Error: fake not ready after 2s: the model did not finish loading" in err
    assert "Last log lines of fake:" in err and "fake nim-serve: listening" in err
    assert "Hint: it is still starting" in err
    code, out, _ = nimctl(["ps", "--format", "json"], env)
    [row] = json.loads(out)
    assert row["state"] == "running" and row["ready"] is False


def test_launcher_records_a_signal_death(tmp_path: Path) -> None:
    from nimctl.runtime.launcher import main

    code = main([str(tmp_path), "--", sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 9)"])
    assert code == 137
    assert (tmp_path / "exit_code").read_text().strip() == "137"
    assert main([str(tmp_path), "--", sys.executable, "-c", "raise SystemExit(4)"]) == 4
    assert (tmp_path / "exit_code").read_text().strip() == "4"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("front", ["stops", "hangs"])
def test_stop_ends_an_engine_in_its_own_session(
    front: str, state: Path, port: int, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front starts its engine with a session of its own (as nim-serve does with vLLM), so the
    launcher's process group misses it: stop must end it whether the front stops or hangs."""
    monkeypatch.setattr(local_runtime, "_LEFTOVER_GRACE_S", 0.2)
    extra = ["-e", "FAKE_NIM_ENGINE=stubborn"]
    if front == "hangs":
        extra += ["-e", "FAKE_NIM_IGNORE_TERM=1"]
    code, _, err = nimctl([*run_args(port, tmp_path, "ok"), *extra], env)
    assert code == 0, err
    [handle] = local_runtime.list_handles()
    tree = [psutil.Process(handle.pid), *psutil.Process(handle.pid).children(recursive=True)]
    engines = [p for p in tree if os.getsid(p.pid) != os.getsid(handle.pid)]
    assert len(tree) == 3 and len(engines) == 1, tree  # launcher, fake nim-serve, its engine

    code, out, err = nimctl(["stop", "fake", "--timeout", "1"], env)
    assert code == 0, err
    assert out.strip() == "fake: stopped and removed"
    assert [p.pid for p in tree if _alive(p.pid)] == []


def _write_log(state: Path, name: str, text: str) -> None:
    folder = _write_instance(state, name, 0, None)  # an ended instance
    (folder / local_runtime.LOG_FILE).write_text(text, encoding="utf-8")


def test_logs_streams_the_whole_file(state: Path, env: dict[str, str]) -> None:
    lines = [f"line {i:05d} " + "x" * 90 for i in range(4000)]  # 400 KiB: more than one read
    _write_log(state, "big", "\n".join(lines) + "\nthe last one has no newline")
    code, out, _ = nimctl(["logs", "big"], env)
    assert code == 0 and out.splitlines() == [*lines, "the last one has no newline"]
    code, out, _ = nimctl(["logs", "big", "--tail", "2"], env)
    assert out.splitlines() == [lines[-1], "the last one has no newline"]


@pytest.mark.parametrize("text", ["", "\n", "a", "a\n", "a\nb", "a\nb\n", "a\n\nb\n\n", "é\n" * 9 + "end"])
def test_tail_offsets_across_block_edges(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_runtime, "_BLOCK", 3)  # every line crosses a block edge
    path = tmp_path / "log"
    path.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    with path.open("rb") as handle:
        for count in range(len(lines) + 2):
            handle.seek(local_runtime._tail_offset(handle, count))
            assert handle.read().decode().splitlines() == (
                lines[max(0, len(lines) - count) :] if count else []
            )
