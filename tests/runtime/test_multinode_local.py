"""`nimctl run tiny-vlm --nodes 2 --runtime local` end to end: the real nim-serve leader and worker
as host processes on 127.0.0.1 and 127.0.0.2, one vLLM CPU engine across both (tensor parallel 2).

One group for the module (an engine start takes a minute or more here); the tests run in file
order and the last one kills the worker, so it must stay last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from tests.runtime.multinode_checks import check_chat, ready_body, seconds_until_not_ready

pytestmark = pytest.mark.engine

NAME = "nimctl-e2e-group"


class Group:
    def __init__(self, state: Path, port: int) -> None:
        self.state = state
        self.url = f"http://127.0.0.1:{port}"
        self.env = {"NIMCTL_STATE_DIR": str(state), "NIMCTL_ASSUME_GPUS": "none", "NO_COLOR": "1",
                    "DOCKER_HOST": "tcp://127.0.0.1:9"}  # fmt: skip
        self.processes: list[psutil.Process] = []  # every process of both members, read once ready

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, list(argv), env=self.env)
        return result.exit_code, result.stdout, result.stderr

    def record(self, name: str) -> dict[str, object]:
        return dict(json.loads((self.state / "instances" / name / "instance.json").read_text()))

    @property
    def key(self) -> str:
        return (self.state / "credentials" / NAME / "api-keys").read_text().strip()


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    group = Group(tmp_path_factory.mktemp("group-state"), port)
    cache = tmp_path_factory.mktemp("group-cache")
    code, out, err = group(
        "run", "tiny-vlm", "-d", "--nodes", "2", "--runtime", "local", "--name", NAME, "--port", str(port),
        "--cache", str(cache), "--timeout", "900",
    )  # fmt: skip
    try:
        assert code == 0, err
        assert f"tiny-vlm is ready at {group.url}" in out
        for name in (NAME, f"{NAME}-node1"):
            launcher = psutil.Process(int(str(group.record(name)["pid"])))
            group.processes += [launcher, *launcher.children(recursive=True)]
        yield group
    finally:
        code, out, err = group("stop", NAME)
        assert code == 0, err
    assert not (group.state / "instances" / NAME).exists()
    assert not (group.state / "instances" / f"{NAME}-node1").exists()
    survivors = [" ".join(p.cmdline()) for p in group.processes if _alive(p)]
    assert survivors == [], f"outlived nimctl stop: {survivors}"


def test_ps_shows_one_instance_with_its_members(group: Group) -> None:
    _code, out, _ = group("ps", "--format", "json")
    [row] = [row for row in json.loads(out) if row["name"] == NAME]
    assert row["ready"] is True and row["nodes"] == 2 and row["url"] == group.url
    assert [(m["name"], m["rank"], m["state"], m["address"]) for m in row["members"]] == [
        (NAME, 0, "running", "127.0.0.1"),
        (f"{NAME}-node1", 1, "running", "127.0.0.2"),
    ]
    _, out, _ = group("ps")
    assert out.splitlines()[0].split()[-1] == "NODES" and "2 (node1 up)" in out


def test_chat_through_the_leader(group: Group) -> None:
    check_chat(group.url, group.key)


def test_the_engine_spans_both_nodes(group: Group) -> None:
    """vLLM's own words: one torch.distributed world of 2, rank 0 on the leader, rank 1 on the worker."""
    code, out, _ = group("logs", NAME)
    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("[node0] ") and "world_size=2 rank=0" in line for line in lines), out[-3000:]
    assert any(line.startswith("[node1] ") and "world_size=2 rank=1" in line for line in lines), out[-3000:]
    # The worker's engine is vLLM headless, joined to the leader's store on 127.0.0.1.
    assert any(line.startswith("[node1] ") and "--headless" in line for line in lines)
    # The worker serves no API, only its probes, on its own address.
    port = int(str(group.record(f"{NAME}-node1")["port"]))
    code, body = ready_body(f"http://127.0.0.2:{port}")
    assert code == 200, body


def test_a_killed_worker_fails_the_leader(group: Group) -> None:
    worker = int(str(group.record(f"{NAME}-node1")["pid"]))
    leader = psutil.Process(int(str(group.record(NAME)["pid"])))
    os.killpg(worker, signal.SIGKILL)  # the launcher's group: it and nim-serve (the engine has its own)
    took = seconds_until_not_ready(group.url, within=10)
    assert took < 10
    code, body = ready_body(group.url)
    assert code in (0, 503), body
    leader.wait(timeout=90)
    assert (group.state / "instances" / NAME / "exit_code").read_text().strip() not in ("", "0")
    code, out, _ = group("ps", "--all", "--format", "json")
    [row] = [row for row in json.loads(out) if row["name"] == NAME]
    assert row["state"] == "exited" and row["exit_code"] not in (None, 0)
    deadline = time.monotonic() + 30  # the worker's engine goes when its nim-serve is gone
    while time.monotonic() < deadline and any(_alive(p) for p in group.processes):
        time.sleep(0.5)
    assert not [p.pid for p in group.processes if _alive(p)], "a member's process outlived the group"


def _alive(process: psutil.Process) -> bool:
    try:  # is_running also checks the start time: a reused pid is not the process
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
