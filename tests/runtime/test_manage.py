"""Both runtimes behind one API: who asks Docker, how long for, and that every connection is closed.

Local instances here are real processes (a sleeping Python) recorded the way ``nimctl run``
records them; Docker is a stand-in client (a unit test of this layer), an address where
nothing listens, or a socket that accepts and never answers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nimctl.cli._target import find_running_instance_url
from nimctl.errors import UsageError
from nimctl.runtime import local_runtime, manage
from nimctl.runtime.planning import plan_run


class FakeContainers:
    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named

    def list(self, **_: object) -> list[Any]:
        return []

    def get(self, name: str) -> Any:
        from docker.errors import NotFound

        if name not in self.named:
            raise NotFound(f"No such container: {name}")
        return self.named[name]


class FakeDocker:
    """Stands in for a DockerClient whose daemon answered; records whether it was closed."""

    def __init__(self, named: dict[str, Any] | None = None) -> None:
        self.containers = FakeContainers(named or {})
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Unmanaged:
    """A container someone else started: no nimctl label."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.short_id = "0123456789ab"
        self.status = "running"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    return tmp_path / "state"


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[FakeDocker]:
    made: list[FakeDocker] = []

    def connect(timeout: float | None = None) -> FakeDocker:
        made.append(FakeDocker({"other": Unmanaged()}))
        return made[-1]

    monkeypatch.setattr(manage, "connect", connect)
    monkeypatch.setattr(manage, "may_answer", lambda: True)
    # The SDK stand-in lists the containers: not the real daemon's SDK-free listing.
    monkeypatch.setattr(manage, "container_summaries", lambda timeout, all_states: None)
    return made


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def record_running(state: Path, sleepers: list[subprocess.Popen[bytes]], name: str, port: int) -> str:
    """A running local instance as ``nimctl run -d`` leaves it: a live pid and its identity."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    sleepers.append(process)
    folder = state / "instances" / name
    folder.mkdir(parents=True)
    url = f"http://127.0.0.1:{port}"
    record = {
        "name": name,
        "model": "tiny-vlm",
        "url": url,
        "pid": process.pid,
        "pid_identity": local_runtime.process_identity(process.pid),
    }
    (folder / local_runtime.INSTANCE_FILE).write_text(json.dumps(record), encoding="utf-8")
    return url


def test_list_and_find_close_their_docker_connection(state: Path, clients: list[FakeDocker]) -> None:
    instances, note = manage.list_instances(all_states=True, readiness=False)
    assert instances == [] and note is None
    with pytest.raises(UsageError, match="no instance named ghost"):
        manage.find_instance("ghost")
    with pytest.raises(UsageError, match="was not started by nimctl"):
        manage.stop_instance("other")
    # ghost is looked up twice: as an instance, then as a group whose leader is gone (its workers).
    assert len(clients) == 4 and all(client.closed for client in clients)


def test_a_local_name_taken_by_a_container_is_refused_with_one_connection(
    state: Path, clients: list[FakeDocker], tmp_path: Path
) -> None:
    spec = plan_run(model="tiny-vlm", runtime="local", name="other", cache_dir=tmp_path / "cache")
    with pytest.raises(UsageError, match="in use by container 0123456789ab"):
        manage.start_instance(spec, docker_answers=None)
    assert len(clients) == 1 and clients[0].closed


def test_auto_remembers_that_no_daemon_answered(
    state: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    choice = manage.choose_runtime("auto")
    assert (choice.runtime, choice.docker_answers) == ("local", False)
    assert "no Docker daemon answers" in (choice.note or "")


def test_default_target_reads_local_instances_first(
    state: Path, sleepers: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    monkeypatch.setattr(manage, "connect", lambda timeout=None: pytest.fail("Docker was asked"))
    assert find_running_instance_url() is None
    first = record_running(state, sleepers, "first", 18001)
    assert find_running_instance_url() == first

    # Two local instances already make the answer (several): Docker is not asked even if it may be there.
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    second = record_running(state, sleepers, "second", 18002)
    assert sorted(manage.running_instance_urls()) == [first, second]


def test_default_target_gives_a_silent_daemon_about_a_second(
    state: Path, sleepers: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = record_running(state, sleepers, "only", 18003)
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{silent.getsockname()[1]}")
        began = time.monotonic()
        assert find_running_instance_url() == url
        took = time.monotonic() - began
    assert took < manage.QUICK_DOCKER_TIMEOUT_S * 4, took


def test_listing_with_no_container_of_nimctls_skips_the_docker_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """ps on a machine whose daemon holds no nimctl container never connects through the SDK."""
    from nimctl.runtime.docker_runtime import DockerRuntime

    asked: list[bool] = []

    def summaries(timeout: float, *, all_states: bool) -> list[dict[str, Any]]:
        asked.append(all_states)
        return []

    def no_sdk(timeout: float | None = None) -> Any:
        pytest.fail("the SDK was asked")

    docker = DockerRuntime(connect=no_sdk, may_answer=lambda: True, summaries=summaries)
    assert docker.list(all_states=False) == [] and asked == [True]
    # A daemon that could not be asked quickly (None) or holds some: the SDK lists them.
    answered: list[str] = []

    def sdk(timeout: float | None = None) -> Any:
        answered.append("sdk")
        raise manage.RuntimeUnavailableError("stand-in")

    for quick in (None, [{"Id": "abc"}]):
        docker = DockerRuntime(
            connect=sdk, may_answer=lambda: True, summaries=lambda t, *, all_states, q=quick: q
        )
        with pytest.raises(manage.RuntimeUnavailableError):
            docker.list(all_states=False)
    assert answered == ["sdk", "sdk"]
