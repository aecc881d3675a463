"""`nimctl run tiny-vlm --nodes 2 --runtime docker` end to end: the leader and the worker as
containers on the group's own bridge network (each its own address), the CPUs split between
them, one vLLM CPU engine across both (tensor parallel 2).

One group for the module; the tests run in file order and the last one kills the worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from nimctl import contract
from tests.docker.conftest import RUN_TIMEOUT_S, Cli, free_port
from tests.runtime.multinode_checks import check_chat, ready_body, seconds_until_not_ready

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = "nimctl-e2e-group"
WORKER = f"{NAME}-node1"
NETWORK = f"nimctl-{NAME}"


def group_labelled(client: DockerClient) -> list[str]:
    filters = {"label": f"{contract.GROUP_LABEL}={NAME}"}
    return [c.name for c in client.containers.list(all=True, filters=filters)]


@pytest.fixture(scope="module")
def group(
    docker_client: DockerClient, cpu_image: str, nimctl: Cli, session_dirs: dict[str, Path]
) -> Iterator[str]:
    port = free_port()
    code, out, err = nimctl(
        "run", "tiny-vlm", "-d", "--nodes", "2", "--runtime", "docker", "--name", NAME, "--port", str(port),
        "--cache", str(session_dirs["cache"]), "--image", cpu_image, "--timeout", RUN_TIMEOUT_S,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert code == 0, err
        assert f"tiny-vlm is ready at {url}" in out
        yield url
    finally:
        code, out, err = nimctl("stop", NAME)
        leftovers = group_labelled(docker_client)
        networks = [n.name for n in docker_client.networks.list(names=[NETWORK])]
        for name in leftovers:  # whatever the assertions below say, nothing stays for the next run
            docker_client.containers.get(name).remove(force=True)
        for network in docker_client.networks.list(names=[NETWORK]):
            network.remove()
    assert code == 0, err
    assert leftovers == [] and networks == [], (leftovers, networks)


def test_members_are_containers_on_the_group_network(
    docker_client: DockerClient, group: str, nimctl: Cli
) -> None:
    leader, worker = docker_client.containers.get(NAME), docker_client.containers.get(WORKER)
    network = docker_client.networks.get(NETWORK)
    assert network.attrs["Driver"] == "bridge" and network.attrs["Labels"][contract.GROUP_LABEL] == NAME
    addresses = []
    for container, rank in ((leader, 0), (worker, 1)):
        assert container.labels[contract.GROUP_LABEL] == NAME
        assert container.labels[contract.NODE_RANK_LABEL] == str(rank)
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [NETWORK]
        addresses.append(container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])
        assert container.attrs["HostConfig"]["NanoCpus"] > 0  # the CPUs are split between the members
    assert addresses[0] != addresses[1]
    assert worker.attrs["HostConfig"]["PortBindings"] in (None, {})  # only the leader publishes

    _, out, _ = nimctl("ps", "--format", "json")
    [row] = [row for row in json.loads(out) if row["name"] == NAME]
    assert row["ready"] is True and row["url"] == group and row["nodes"] == 2
    assert [(m["name"], m["rank"], m["state"], m["address"]) for m in row["members"]] == [
        (NAME, 0, "running", addresses[0]),
        (WORKER, 1, "running", addresses[1]),
    ]


def test_chat_through_the_leader(group: str, session_dirs: dict[str, Path]) -> None:
    key = (session_dirs["state"] / "credentials" / NAME / "api-keys").read_text().strip()
    check_chat(group, key)


def test_the_engine_spans_both_containers(group: str, nimctl: Cli) -> None:
    code, out, _ = nimctl("logs", NAME)
    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("[node0] ") and "world_size=2 rank=0" in line for line in lines), out[-3000:]
    assert any(line.startswith("[node1] ") and "world_size=2 rank=1" in line for line in lines), out[-3000:]


def test_a_killed_worker_fails_the_leader(docker_client: DockerClient, group: str, nimctl: Cli) -> None:
    docker_client.containers.get(WORKER).kill()
    took = seconds_until_not_ready(group, within=10)
    assert took < 10
    code, body = ready_body(group)
    assert code in (0, 503), body
    leader = docker_client.containers.get(NAME)
    deadline = time.monotonic() + 90
    while leader.status == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        leader.reload()
    assert leader.status == "exited" and leader.attrs["State"]["ExitCode"] not in (0, None)
    _, out, _ = nimctl("ps", "--all", "--format", "json")
    [row] = [row for row in json.loads(out) if row["name"] == NAME]
    assert row["state"] == "exited" and [m["state"] for m in row["members"]] == ["exited", "exited"]
