"""Both runtimes behind one API, with Docker as a stand-in client (tests/runtime/fake_docker.py).

A name on both sides, the checks made before an image build, `stop --all` when Docker cannot
be asked or an instance vanishes, and the SDK's stray errors mapped to nimctl's exit codes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from docker.errors import NotFound
from typer.testing import CliRunner

from nimctl.cli.main import app
from nimctl.errors import (
    EXIT_RUNTIME_FAILED,
    EXIT_RUNTIME_UNAVAILABLE,
    EXIT_USAGE,
    RuntimeFailure,
    RuntimeUnavailableError,
    UsageError,
)
from nimctl.runtime import docker_client, docker_runtime, local_runtime, manage
from nimctl.runtime.gpu_request import GpuRequest
from nimctl.runtime.planning import plan_run
from tests.runtime.fake_docker import FakeContainer, FakeDocker, api_error, raising

NO_DAEMON = "tcp://127.0.0.1:9"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path / "state"


@pytest.fixture
def docker(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDocker]:
    """One stand-in daemon; every connection nimctl opens is a view of it."""
    daemon = FakeDocker()
    opened: list[FakeDocker] = []

    def connect(timeout: float | None = None) -> FakeDocker:
        client = FakeDocker()
        client.containers, client.images, client.api = daemon.containers, daemon.images, daemon.api
        opened.append(client)
        return client

    monkeypatch.setattr(manage, "connect", connect)
    monkeypatch.setattr(manage, "may_answer", lambda: True)
    # The SDK stand-in lists the containers: not the real daemon's SDK-free listing.
    monkeypatch.setattr(manage, "container_summaries", lambda timeout, all_states: None)
    yield daemon
    assert all(client.closed for client in opened), "a Docker connection was left open"


def ended_local(state: Path, name: str, log: str = "the old local log\n") -> Path:
    """The record of a local instance that has ended (no live pid), as `run -d` leaves it."""
    folder = state / "instances" / name
    folder.mkdir(parents=True)
    record = {"name": name, "model": "tiny-vlm", "url": "http://127.0.0.1:9", "pid": 0,
              "started_at": "2020-01-01T00:00:00+00:00"}  # fmt: skip
    (folder / local_runtime.INSTANCE_FILE).write_text(json.dumps(record), encoding="utf-8")
    (folder / local_runtime.LOG_FILE).write_text(log, encoding="utf-8")
    (folder / "exit_code").write_text("0\n", encoding="utf-8")
    return folder


def cli(*argv: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(argv))
    return result.exit_code, result.stdout, result.stderr


def test_a_running_container_is_not_hidden_by_an_ended_local_record(state: Path, docker: FakeDocker) -> None:
    folder = ended_local(state, "twin")
    container = FakeContainer("twin", log=b"from the container\n")
    docker.containers.all.append(container)
    assert list(manage.instance_logs("twin")) == ["from the container"]
    stopped = manage.stop_instance("twin")
    assert stopped.was_running and container.removed
    assert not folder.exists(), "stop NAME left an instance called NAME"


def test_an_ended_container_started_before_the_local_record_loses(state: Path, docker: FakeDocker) -> None:
    ended_local(state, "twin", log="newer local log\n")
    docker.containers.all.append(FakeContainer("twin", status="exited", started_at="2019-01-01T00:00:00Z"))
    assert list(manage.instance_logs("twin")) == ["newer local log"]


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Image builds and container starts that only record that they were asked for."""
    from nimctl.runtime import images

    asked: list[str] = []
    monkeypatch.setattr(images, "ensure_image", lambda client, image, **_: asked.append(f"build {image}"))

    def start(client: FakeDocker, spec: object) -> docker_runtime.ContainerHandle:
        asked.append("start")
        return docker_runtime.ContainerHandle(FakeContainer("new"), "http://127.0.0.1:1")  # type: ignore[arg-type]

    monkeypatch.setattr(docker_runtime, "start", start)
    return asked


def test_a_container_taking_a_name_clears_the_ended_local_record(
    state: Path, docker: FakeDocker, no_build: list[str], tmp_path: Path
) -> None:
    folder = ended_local(state, "twin")
    spec = plan_run(model="tiny-vlm", runtime="docker", name="twin", port=_free_port(), cache_dir=tmp_path)
    manage.start_instance(spec).close()
    assert no_build == [f"build {spec.image}", "start"]
    assert not folder.exists()


def test_name_and_port_are_checked_before_the_image_build(
    state: Path, docker: FakeDocker, no_build: list[str], tmp_path: Path
) -> None:
    docker.containers.all.append(FakeContainer("taken", status="exited"))
    spec = plan_run(model="tiny-vlm", runtime="docker", name="taken", cache_dir=tmp_path)
    with pytest.raises(UsageError, match=r"the name taken is in use by container \w+ \(exited\)"):
        manage.start_instance(spec)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        spec = plan_run(model="tiny-vlm", runtime="docker", port=busy.getsockname()[1], cache_dir=tmp_path)
        with pytest.raises(UsageError, match="is already in use"):
            manage.start_instance(spec)
    assert no_build == [], "the image was built before a check that could refuse the run"


def test_stop_all_without_docker_says_containers_were_not_stopped(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    ended_local(state, "local-one")
    code, out, err = cli("stop", "--all")
    assert code == 0, err
    assert out.strip() == "local-one: had already exited with code 0; removed"
    assert f"containers not stopped: Docker daemon not reachable at {NO_DAEMON}" in err


def test_stop_all_goes_on_past_a_vanished_or_failing_instance(state: Path, docker: FakeDocker) -> None:
    vanished, failing, fine = FakeContainer("a-vanished"), FakeContainer("b-failing"), FakeContainer("c-fine")

    vanished.fail["reload"] = raising(NotFound("No such container: a-vanished"))  # removed meanwhile
    failing.fail["stop"] = api_error("driver failed stopping container")
    docker.containers.all += [vanished, failing, fine]
    code, out, err = cli("stop", "--all")
    assert code == EXIT_RUNTIME_FAILED, err
    assert out.splitlines() == ["a-vanished: already gone (removed meanwhile)", "c-fine: stopped and removed"]
    assert "b-failing: not stopped: Docker failed while stopping b-failing: driver failed" in err
    assert "Error: 1 instance(s) not stopped; first: Docker failed while stopping b-failing" in err
    assert fine.removed


@pytest.mark.parametrize(
    ("failure", "code", "message"),
    [
        (api_error("container is dead"), EXIT_RUNTIME_FAILED, "Docker failed while reading its log: container is dead"),
        (raising(NotFound("gone")), EXIT_USAGE, "container box is gone (removed while reading its log)"),
        (raising(ConnectionError("Connection aborted")), EXIT_RUNTIME_UNAVAILABLE, "Docker daemon not reachable"),
    ],
)  # fmt: skip
def test_docker_errors_while_reading_logs_are_nimctl_errors(
    failure: Callable[[], None], code: int, message: str, state: Path, docker: FakeDocker
) -> None:
    container = FakeContainer("box")
    container.fail["logs"] = failure
    docker.containers.all.append(container)
    exit_code, _, err = cli("logs", "box")
    assert exit_code == code, err
    assert message in err and "this is a bug" not in err


def test_a_docker_error_while_listing_is_a_note_not_a_failure(state: Path, docker: FakeDocker) -> None:
    docker.containers.fail_list = api_error("listing exploded")
    ended_local(state, "local-one")
    code, out, err = cli("ps", "--all", "--format", "json")
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)] == ["local-one"]
    assert "containers not listed: Docker failed while listing containers: listing exploded" in err


def test_auto_on_a_socket_without_permission_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(timeout: float | None = None) -> None:
        raise docker_client.unavailable(PermissionError(13, "Permission denied"))

    monkeypatch.setattr(docker_client, "connect", refused)
    monkeypatch.setattr(docker_client, "may_answer", lambda: True)
    choice = manage.choose_runtime("auto")
    assert choice.runtime == "local" and choice.docker_answers is False
    assert "refused permission" in (choice.note or "") and "docker group" in (choice.note or "")
    assert "no Docker daemon answers" not in (choice.note or "")


class _Spec:
    name = "n"
    host, port = "127.0.0.1", 1

    def __init__(self, gpus: str) -> None:
        self.gpus = GpuRequest.parse(gpus)


@pytest.mark.parametrize(
    ("text", "gpus", "expected"),
    [
        ('could not select device driver "" with capabilities: [[gpu]]', "all", RuntimeUnavailableError),
        ("unknown or invalid runtime name: nvidia", "all", RuntimeUnavailableError),
        # An image or a path with "nvidia" in it is no sign of a missing runtime.
        ("failed to create shim task: /opt/nvidia/run: no such file", "all", RuntimeFailure),
        ('could not select device driver "" with capabilities: [[gpu]]', "none", RuntimeFailure),
    ],
)
def test_no_nvidia_runtime_is_told_by_the_daemons_own_words(text: str, gpus: str, expected: type) -> None:
    from docker.errors import APIError

    error = docker_runtime._start_error(APIError(text, explanation=text), _Spec(gpus))  # type: ignore[arg-type]
    assert type(error) is expected


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_daemon_error_while_waiting_is_a_runtime_failure() -> None:
    container = FakeContainer("box")
    handle = docker_runtime.ContainerHandle(container, "http://127.0.0.1:1")  # type: ignore[arg-type]
    container.fail["reload"] = api_error("daemon hiccup")
    with pytest.raises(RuntimeFailure, match="Docker failed while watching it: daemon hiccup"):
        handle.state()
    container.fail.clear()
    container.removed = True
    assert handle.state() == ("removed", None) and handle.last_lines(5) == []
