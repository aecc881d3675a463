"""The server's own ``hf://`` download at start-up: its progress on ready, and NIM_DISABLE_MODEL_DOWNLOAD.

The download runs against the tests' hub emulation (tests/hub_emulation.py): a real ``nim-serve``
fetches ``hf://nimctl-test/tiny-vlm`` with the real huggingface_hub client, and the hub holds the
weights file halfway, so that the test sees the download under way for as long as it needs.
The readiness view that ``nimctl run`` draws from those answers is checked with events.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimctl.cli.progress import ReadinessView
from nimctl.errors import DiskFullError, IntegrityError, ModelUnavailableError, RuntimeFailure
from nimctl.output import Output
from nimctl.runtime.readiness import ReadinessEvent, _ask_ready
from nimctl.server.fetch import _result, fetch_model
from nimctl.store.progress import FetchProgress
from nimctl.store.source import parse_model_source
from tests.hub_emulation import HubEmulation
from tests.server_process import ServerProcess, free_port

REPO = "nimctl-test/tiny-vlm"
MODEL = f"hf://{REPO}"
WEIGHTS = "model.safetensors"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"  # tiny-vlm-hub.yaml: the manifest
DEADLINE_S = 120.0
EXIT_MODEL_UNAVAILABLE = ModelUnavailableError.exit_code
# `nimctl run`'s phase line in a pipe, from the server's ready answer.
DOWNLOADING_LINE = r"fetch-view: downloading \d+ %, [\d.]+ of [\d.]+ [MG]B, \d+ of \d+ files \(\d+s\)"


def _server(tmp_path: Path, hub: HubEmulation, **env: str) -> ServerProcess:
    return ServerProcess(
        MODEL,
        tmp_path / "cache",
        tmp_path / "nim-serve.log",
        env={
            "HF_ENDPOINT": hub.url,
            "NIMCTL_PROFILES_DIR": str(FIXTURES),
            # The hub holds the weights until the test lets go: the client must wait that long.
            "HF_HUB_DOWNLOAD_TIMEOUT": str(int(DEADLINE_S)),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **env,
        },
    )


def _ready_body(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    try:
        response = httpx.get(server.url + "/v1/health/ready", timeout=5)
    except httpx.TransportError:
        return 0, {}
    return response.status_code, response.json()


def _poll_until(server: ServerProcess, seen: Any, what: str) -> dict[str, Any]:
    """Poll ready until ``seen(status, body)``; the server exiting or the deadline first is a failure."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            pytest.fail(
                f"nim-serve exited with {server.process.returncode} before {what}:\n{server.log_tail()}"
            )
        status, body = _ready_body(server)
        if seen(status, body):
            return body
        time.sleep(0.1)  # the poll interval; what ends the loop is the server's answer
    pytest.fail(f"no {what} within {DEADLINE_S:.0f} s:\n{server.log_tail()}")


def _mid_download(status: int, body: dict[str, Any]) -> bool:
    progress = body.get("progress")
    return (
        status == 503 and isinstance(progress, dict) and 0 < progress["bytes_done"] < progress["bytes_total"]
    )


def test_ready_says_how_far_the_start_up_download_has_come(hf_env: HubEmulation, tmp_path: Path) -> None:
    hub = hf_env
    release = hub.stall_after(REPO, WEIGHTS, 200_000)
    server = _server(tmp_path, hub).start()
    try:
        body = _poll_until(server, _mid_download, "a download under way on ready")
        progress = FetchProgress.from_dict(body["progress"])
        assert body["status"] == "fetching" and body["object"] == "health.response"
        assert body["error"]["message"] == body["message"]  # still OpenAI's error shape
        assert body["message"] == f"model files are being fetched: {MODEL}, {progress.describe()}"
        percent = int(body["message"].split("downloading ", 1)[1].split(" %", 1)[0])
        assert 0 <= percent < 100 and progress.files_done < progress.files_total
        # What `nimctl run`'s readiness wait reads from the same answer.
        with httpx.Client(timeout=5) as client:
            said = _ask_ready(client, server.url)
        assert not said.ready and said.progress is not None and "downloading" in said.message
        assert said.progress.files_total == progress.files_total

        release.set()
        # The download finishes: the engine is starting, and ready no longer reports a download.
        body = _poll_until(server, lambda _s, b: b.get("status") not in (None, "fetching"), "the fetch's end")
        assert "progress" not in body
        log = server.log_path.read_text(errors="replace")
        assert f"fetching {MODEL}: downloading" in log  # the front's log says it too
    finally:
        release.set()
        server.stop()


def test_nimctl_run_shows_the_servers_download(hf_env: HubEmulation, tmp_path: Path) -> None:
    """``nimctl run --runtime local`` in a pipe prints the download's progress on its phase line."""
    hub = hf_env
    release = hub.stall_after(REPO, WEIGHTS, 200_000)
    state = tmp_path / "state"
    env = {
        **os.environ,
        **_server(tmp_path, hub).env,
        "NIMCTL_STATE_DIR": str(state),
        "NIMCTL_ASSUME_GPUS": "none",
        "NO_COLOR": "1",
        "DOCKER_HOST": "tcp://127.0.0.1:9",
    }
    argv = ["run", "tiny-vlm-hub", "--runtime", "local", "--name", "fetch-view", "--port", str(free_port())]
    argv += ["--cache", str(tmp_path / "cache"), "--timeout", str(int(DEADLINE_S))]
    run = subprocess.Popen(
        [sys.executable, "-m", "nimctl", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert run.stderr is not None
        timer = threading.Timer(DEADLINE_S, run.kill)  # a run that never shows it ends the read below
        timer.start()
        for line in run.stderr:
            seen.append(line.rstrip())
            if line.startswith("fetch-view: downloading "):
                break
        timer.cancel()
        assert re.fullmatch(DOWNLOADING_LINE, seen[-1] if seen else ""), "\n".join(seen)
    finally:
        release.set()
        run.send_signal(signal.SIGTERM)  # a foreground run stops its instance first
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        subprocess.run(
            [sys.executable, "-m", "nimctl", "stop", "--all"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )


def test_offline_with_an_empty_cache_fails_at_once_naming_the_model(
    hf_env: HubEmulation, tmp_path: Path
) -> None:
    """NIM_DISABLE_MODEL_DOWNLOAD=1: nothing is fetched (the hub sees no request), the server fails."""
    hub = hf_env
    server = _server(tmp_path, hub, NIM_DISABLE_MODEL_DOWNLOAD="1").start()
    assert server.process is not None
    try:
        body = _poll_until(server, lambda _s, b: b.get("status") == "failed", "the failure on ready")
        assert f"{MODEL} is not in the cache" in body["message"]
        assert server.process.wait(30) == EXIT_MODEL_UNAVAILABLE, server.log_tail()
        log = server.log_path.read_text(errors="replace")
        assert f"{MODEL} is not in the cache" in log and f"nimctl pull {MODEL}" in log
        assert hub.requests() == []
    finally:
        server.stop()


def test_the_fetch_child_reports_progress_then_the_folder(hf_env: HubEmulation, tmp_path: Path) -> None:
    reports: list[FetchProgress] = []
    folder = asyncio.run(fetch_model(parse_model_source(MODEL), tmp_path, on_progress=reports.append))
    assert (folder / WEIGHTS).is_file()
    assert reports and reports[-1].fraction == 1.0
    assert reports[-1].files_done == reports[-1].files_total == len(list(folder.iterdir()))
    assert [r.bytes_done for r in reports] == sorted(r.bytes_done for r in reports)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("ModelUnavailableError", ModelUnavailableError),
        ("DiskFullError", DiskFullError),
        ("IntegrityError", IntegrityError),
        ("ServerUnreachableError", RuntimeFailure),  # not one the front re-raises: its words stay
        (None, RuntimeFailure),
    ],
)
def test_the_fronts_error_is_the_childs_kind(kind: str | None, error: type[Exception]) -> None:
    with pytest.raises(error, match="^the words$") as raised:
        _result({"error": "the words", "hint": "the hint", "kind": kind}, 1, MODEL)
    assert type(raised.value) is error and raised.value.hint == "the hint"  # type: ignore[attr-defined]


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Output:
    """An Output whose stderr is no terminal: the views print plain lines."""
    monkeypatch.setenv("NO_COLOR", "1")
    return Output()


def _events(*progress: FetchProgress | None) -> list[ReadinessEvent]:
    return [
        ReadinessEvent("loading", float(i), "a log line", message="model files are being fetched", progress=p)
        for i, p in enumerate(progress)
    ]


def test_the_readiness_view_shows_the_download_in_a_pipe(
    pipe: Output, capsys: pytest.CaptureFixture[str]
) -> None:
    gb = 1_000_000_000
    first, second, third = (FetchProgress(n * gb // 10, 26 * gb // 10, n, 9) for n in (1, 2, 3))
    view = ReadinessView(pipe, "nimctl-x")
    with view:
        for event in _events(first, second):  # within 5 s: the second is not printed
            view(event)
        assert view.line.text.startswith("nimctl-x: downloading 7 %, 0.2 of 2.6 GB, 2 of 9 files")
        view.progress_printed_at -= 5  # five seconds on
        view(_events(third)[0])
        view(ReadinessEvent("ready", 9.0))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "nimctl-x: loading the model (0s)",
        "nimctl-x: downloading 3 %, 0.1 of 2.6 GB, 1 of 9 files (0s)",
        "nimctl-x: downloading 11 %, 0.3 of 2.6 GB, 3 of 9 files (0s)",
        "nimctl-x: ready (9s)",
    ]


def test_the_readiness_view_without_progress_shows_the_phase(
    pipe: Output, capsys: pytest.CaptureFixture[str]
) -> None:
    view = ReadinessView(pipe, "nimctl-x")
    with view:
        view(_events(None)[0])
        assert view.line.text == "nimctl-x: loading the model  a log line"
    assert capsys.readouterr().err.splitlines() == ["nimctl-x: loading the model (0s)"]


def test_offline_keeps_the_engine_off_the_hub_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nimctl.server.config import ServerConfig
    from nimctl.server.plan import build_plan, engine_environment

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for offline, expected in ((True, "1"), (False, None)):
        environ = {"NIM_MODEL_PATH": "builtin://tiny-llm", "NIM_CACHE_PATH": str(tmp_path)}
        if offline:
            environ["NIM_DISABLE_MODEL_DOWNLOAD"] = "1"
        plan = build_plan(ServerConfig.from_env(environ), environ={})
        assert engine_environment(plan).get("HF_HUB_OFFLINE") == expected
