"""`nimctl run --nodes N`: each member's description, and a group as one instance for ps, logs and
stop, with stand-ins (tests/runtime/fake_nim_serve.py as every member's nim-serve, and
tests/runtime/fake_docker.py as the daemon). The real two-node engine runs in
tests/runtime/test_multinode_local.py and tests/docker/test_multinode_docker.py.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimctl import contract
from nimctl.cli.main import app
from nimctl.errors import EXIT_RUNTIME_FAILED, EXIT_USAGE
from nimctl.runtime import local_runtime, manage
from nimctl.runtime.container import create_arguments, describe_container
from nimctl.runtime.group import GroupHandle, docker_members, fold, local_members, nodes_summary
from nimctl.runtime.planning import plan_run
from tests.runtime.fake_docker import FakeDocker

FAKE = Path(__file__).resolve().parent / "fake_nim_serve.py"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "NIMCTL_ASSUME_GPUS": "none",
        "NIMCTL_STATE_DIR": str(tmp_path / "state"),
        "NO_COLOR": "1",
        "HF_TOKEN": "",
        "NGC_API_KEY": "",
        "DOCKER_HOST": "tcp://127.0.0.1:9",  # no daemon: ps and find ask only the local runtime
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def nimctl(*argv: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(argv))
    return result.exit_code, result.stdout, result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- The members' descriptions -------------------------------------------------------------------


def test_local_members_are_the_single_node_env_plus_node_environment(
    env: dict[str, str], tmp_path: Path
) -> None:
    spec = plan_run(model="tiny-vlm", runtime="local", name="grp", cache_dir=tmp_path / "c", nodes=2)
    single = plan_run(model="tiny-vlm", runtime="local", name="grp", cache_dir=tmp_path / "c", nodes=1)
    assert spec.profile_name == "vllm-fp32-tp2-pp1-cpu-2node"
    leader, worker = local_members(spec)
    assert (leader.name, worker.name) == ("grp", "grp-node1")
    join = int(leader.env[contract.LEADER_PORT])
    assert worker.env[contract.LEADER_PORT] == str(join)
    base = {k: v for k, v in single.env.items() if k != contract.MODEL_PROFILE}
    base[contract.NUM_COMPUTE_NODES] = "2"
    assert leader.env == {
        **base,
        contract.MODEL_PROFILE: spec.env[contract.MODEL_PROFILE],
        **contract.node_environment(2, 0, "127.0.0.1", leader_port=join, node_address="127.0.0.1"),
    }
    worker_port = int(worker.env[contract.SERVER_PORT])
    assert worker.env == {
        **leader.env,
        contract.SERVER_PORT: str(worker_port),
        contract.SERVER_HOST: "127.0.0.2",
        **contract.node_environment(2, 1, "127.0.0.1", leader_port=join, node_address="127.0.0.2"),
    }
    assert worker_port != leader.port and worker.host == "127.0.0.2" and worker.address == "127.0.0.2"
    # The leader is the instance (its port, its key); the worker has no URL anyone would talk to.
    assert leader.publish and leader.port == spec.port
    assert not worker.publish and worker.security is None
    assert contract.URL_LABEL in leader.labels and contract.URL_LABEL not in worker.labels
    for rank, member in enumerate((leader, worker)):
        assert member.labels[contract.GROUP_LABEL] == "grp"
        assert member.labels[contract.NODE_RANK_LABEL] == str(rank)
        assert member.labels[contract.NODES_LABEL] == "2"


def test_docker_members_share_a_network_and_split_the_cpus(env: dict[str, str], tmp_path: Path) -> None:
    spec = plan_run(model="tiny-vlm", runtime="docker", name="grp", cache_dir=tmp_path / "c", nodes=2)
    leader, worker = docker_members(spec, cpu_count=2)
    for rank, member in enumerate((leader, worker)):
        assert member.env == {**spec.env, **contract.node_environment(2, rank, "grp")}
        assert member.network == "nimctl-grp" and member.cpus == 1
    sdk_leader = create_arguments(describe_container(leader))
    sdk_worker = create_arguments(describe_container(worker))
    assert sdk_leader["ports"] == {f"{contract.CONTAINER_PORT}/tcp": ("127.0.0.1", spec.port)}
    assert sdk_worker["ports"] == {}  # a worker publishes nothing
    assert sdk_leader["network"] == sdk_worker["network"] == "nimctl-grp"
    assert sdk_leader["nano_cpus"] == sdk_worker["nano_cpus"] == 1_000_000_000
    assert sdk_worker["name"] == "grp-node1" and sdk_worker["labels"][contract.NODE_RANK_LABEL] == "1"
    assert [m.cpus for m in docker_members(spec, cpu_count=3)] == [1.5, 1.5]


def test_one_node_is_the_instance_as_before(env: dict[str, str], tmp_path: Path) -> None:
    spec = plan_run(model="tiny-vlm", runtime="docker", name="one", cache_dir=tmp_path / "c")
    assert docker_members(spec) == [spec] and local_members(spec) == [spec]
    assert contract.GROUP_LABEL not in spec.labels and contract.NUM_COMPUTE_NODES not in spec.env
    assert set(create_arguments(describe_container(spec))) & {"network", "nano_cpus"} == set()


def test_dry_run_shows_every_member(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = nimctl("run", "--nodes", "2", "--runtime", "docker", "--dry-run", "--name", "grp")
    assert code == 0, err
    network, leader, worker = out.strip().splitlines()
    assert network.startswith("docker network create") and network.endswith(" nimctl-grp")
    assert "--name grp " in leader and "-p 127.0.0.1:8000:8000" in leader and "NIM_NODE_RANK=0" in leader
    assert "--name grp-node1 " in worker and " -p " not in worker and "NIM_NODE_RANK=1" in worker
    assert "NIM_LEADER_ADDRESS=grp " in worker and "--network nimctl-grp" in worker

    code, out, err = nimctl("run", "--nodes", "2", "--runtime", "local", "--dry-run", "--name", "grp")
    assert code == 0, err
    leader, worker = out.strip().splitlines()
    assert "NIM_NODE_RANK=0" in leader and "NIM_NODE_ADDRESS=127.0.0.1" in leader
    assert "NIM_NODE_RANK=1" in worker and "NIMCTL_SERVER_HOST=127.0.0.2" in worker


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nodes", "0"], "bad --nodes 0"),
        (["--nodes", "65"], "bad --nodes 65"),
        (["--nodes", "2", "-e", "NIM_NODE_RANK=1"], "-e NIM_NODE_RANK: nimctl run --nodes sets it"),
    ],
)
def test_refusals(env: dict[str, str], argv: list[str], message: str) -> None:
    code, _, err = nimctl("run", "--runtime", "local", "--dry-run", *argv)
    assert code == EXIT_USAGE
    assert err.splitlines()[-2] == f"Error: {err.splitlines()[-2].removeprefix('Error: ')}"
    assert message in err and "Hint: " in err


# --- A local group with stand-in servers ---------------------------------------------------------


@pytest.fixture
def fake_serve(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(local_runtime, "_serve_command", lambda: [sys.executable, str(FAKE)])
    yield
    for handle in local_runtime.list_handles():
        local_runtime.stop(handle, timeout=5)


def run_group(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    return nimctl(
        "run", "--runtime", "local", "-d", "--nodes", "2", "--name", "grp", "--port", str(free_port()),
        "--cache", str(tmp_path / "cache"), "--timeout", "20", *extra,
    )  # fmt: skip


def test_local_group_ps_logs_stop(fake_serve: None, tmp_path: Path) -> None:
    code, out, err = run_group(tmp_path)
    assert code == 0, err
    assert "2 nodes: grp, grp-node1" in err and "is ready at http://127.0.0.1:" in out

    code, out, _ = nimctl("ps", "--format", "json")
    [row] = json.loads(out)
    assert row["name"] == "grp" and row["nodes"] == 2 and row["ready"] is True
    assert [(m["name"], m["rank"], m["state"], m["address"]) for m in row["members"]] == [
        ("grp", 0, "running", "127.0.0.1"),
        ("grp-node1", 1, "running", "127.0.0.2"),
    ]
    code, out, _ = nimctl("ps")
    header, line = out.strip().splitlines()
    assert header.split()[-1] == "NODES" and line.endswith("2 (node1 up)")

    code, out, _ = nimctl("logs", "grp")
    lines = out.splitlines()
    assert "[node0] fake nim-serve starting: mode=ok model=builtin://tiny-vlm" in lines
    assert "[node1] fake nim-serve starting: mode=ok model=builtin://tiny-vlm" in lines
    assert all(line.startswith(("[node0] ", "[node1] ")) for line in lines)
    code, out, _ = nimctl("logs", "grp", "--tail", "1")
    assert [line[:8] for line in out.splitlines()] == ["[node0] ", "[node1] "]
    code, out, _ = nimctl("logs", "grp-node1")  # a member's own log, untagged
    assert code == 0 and out.startswith("fake nim-serve starting")

    code, _, err = nimctl("stop", "grp-node1")
    assert code == EXIT_USAGE
    assert "Error: grp-node1 is node 1 of the multi-node group grp" in err and "nimctl stop grp" in err

    code, out, err = nimctl("stop", "grp")
    assert code == 0, err
    assert out.strip() == "grp: stopped and removed (all 2 nodes)"
    assert local_runtime.list_handles() == []
    code, out, _ = nimctl("ps", "--all", "--format", "json")
    assert json.loads(out) == []


def test_a_member_that_exits_while_starting_fails_the_run_and_nothing_stays(
    fake_serve: None, tmp_path: Path
) -> None:
    code, _, err = run_group(tmp_path, "-e", "FAKE_NIM_MODE_RANK1=exit")
    assert code == EXIT_RUNTIME_FAILED
    assert "Error: grp-node1 exited with code 3 while starting" in err
    assert "[node1] fatal: the engine could not start" in err
    assert local_runtime.list_handles() == []  # even detached: a group missing a node cannot serve


def test_stop_reaches_the_workers_of_a_group_whose_leader_is_gone(fake_serve: None, tmp_path: Path) -> None:
    code, _, err = run_group(tmp_path)
    assert code == 0, err
    [leader] = [h for h in local_runtime.list_handles() if h.name == "grp"]
    local_runtime.stop(leader, timeout=5)
    code, out, _ = nimctl("ps", "--format", "json")
    [row] = json.loads(out)
    assert row["name"] == "grp" and [m["name"] for m in row["members"]] == ["grp-node1"]
    code, out, err = nimctl("stop", "grp")
    assert code == 0, err
    assert local_runtime.list_handles() == []


# --- A Docker group with the stand-in daemon ------------------------------------------------------


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDocker]:
    shared = FakeDocker()
    opened: list[FakeDocker] = []

    def connect(timeout: float | None = None) -> FakeDocker:
        client = FakeDocker()
        client.containers, client.images, client.networks = shared.containers, shared.images, shared.networks
        opened.append(client)
        return client

    monkeypatch.setattr(manage, "connect", connect)
    monkeypatch.setattr(manage, "may_answer", lambda: True)
    # The SDK stand-in lists the containers: not the real daemon's SDK-free listing.
    monkeypatch.setattr(manage, "container_summaries", lambda timeout, all_states: None)
    monkeypatch.setattr("nimctl.runtime.images.ensure_image", lambda *a, **k: None)
    yield shared
    assert all(client.closed for client in opened), "a Docker connection was left open"


def test_docker_group_start_find_list_logs_stop(
    env: dict[str, str], daemon: FakeDocker, tmp_path: Path
) -> None:
    spec = plan_run(
        model="tiny-vlm", runtime="docker", name="grp", cache_dir=tmp_path / "c", nodes=2, port=free_port()
    )
    started = manage.start_instance(spec, docker_answers=True)
    assert isinstance(started.handle, GroupHandle)
    started.close()
    [network] = daemon.networks.all
    assert network.name == "nimctl-grp" and network.attrs["Labels"][contract.GROUP_LABEL] == "grp"
    leader, worker = daemon.containers.all
    assert (leader.name, worker.name, leader.status, worker.status) == (
        "grp",
        "grp-node1",
        "running",
        "running",
    )
    assert worker.created_with["network"] == "nimctl-grp" and worker.created_with["ports"] == {}
    assert worker.created_with["environment"][contract.LEADER_ADDRESS] == "grp"
    leader.log, worker.log = b"leader line\n", b"worker line\n"

    instances, _ = manage.list_instances(readiness=False)
    [row] = instances
    assert row.name == "grp" and nodes_summary(row) == "2 (node1 up)"
    assert [m.address for m in row.members] == ["grp", "grp-node1"]  # the fake has no network settings
    assert list(manage.instance_logs("grp")) == ["[node0] leader line", "[node1] worker line"]
    with pytest.raises(Exception, match="grp-node1 is node 1 of the multi-node group grp"):
        manage.stop_instance("grp-node1")

    stopped = manage.stop_instance("grp", timeout=3)
    assert stopped.was_running and [m.name for m in stopped.instance.members] == ["grp", "grp-node1"]
    assert leader.removed and worker.removed and leader.stopped_with == worker.stopped_with == 3
    assert daemon.networks.all == []


def test_docker_group_stop_all_removes_the_network(
    env: dict[str, str], daemon: FakeDocker, tmp_path: Path
) -> None:
    spec = plan_run(
        model="tiny-vlm", runtime="docker", name="grp", cache_dir=tmp_path / "c", nodes=2, port=free_port()
    )
    manage.start_instance(spec, docker_answers=True).close()
    result = manage.stop_all(timeout=1)
    assert sorted(s.instance.name for s in result.stopped) == ["grp", "grp-node1"] and not result.failed
    assert daemon.networks.all == []


def test_a_failed_member_start_removes_the_group(
    env: dict[str, str], daemon: FakeDocker, tmp_path: Path
) -> None:
    from tests.runtime.fake_docker import FakeContainer

    daemon.containers.all.append(FakeContainer("grp-node1", status="exited"))  # the name is taken
    spec = plan_run(
        model="tiny-vlm", runtime="docker", name="grp", cache_dir=tmp_path / "c", nodes=2, port=free_port()
    )
    with pytest.raises(Exception, match="the name grp-node1 is in use"):
        manage.start_instance(spec, docker_answers=True)
    assert [c.name for c in daemon.containers.all if not c.removed] == ["grp-node1"]  # only the old one
    assert daemon.networks.all == []


def test_fold_keeps_single_instances_and_groups_members() -> None:
    from nimctl.runtime.instances import Instance

    def instance(name: str, group: str | None = None, rank: int = 0, state: str = "running") -> Instance:
        return Instance(
            name, "local", "m", None, None, state, None, "", None, "1", group=group, rank=rank, nodes=2
        )

    rows = fold([instance("a"), instance("g", "g"), instance("g-node1", "g", 1, "exited")])
    assert [r.name for r in rows] == ["a", "g"]
    assert nodes_summary(rows[1]) == "2 (node1 exited)"
    [orphan] = fold([instance("g-node1", "g", 1)])
    assert orphan.name == "g" and orphan.url == "" and nodes_summary(orphan) == "2 (node1 up, 1 missing)"


def test_follow_tags_every_member_and_ends_with_the_leader(fake_serve: None, tmp_path: Path) -> None:
    """What a foreground `run --nodes` prints once ready, and `logs -f`: both members, as written."""
    import threading

    code, _, err = run_group(tmp_path)
    assert code == 0, err
    found = manage.find_instance("grp")
    assert isinstance(found.handle, GroupHandle)
    seen: list[str] = []
    following = threading.Thread(target=lambda: seen.extend(found.handle.follow()), daemon=True)
    following.start()
    followed_logs: list[str] = []
    logs_f = threading.Thread(target=lambda: followed_logs.extend(manage.instance_logs("grp", follow=True)))
    logs_f.start()

    def write_all(text: str) -> None:
        for member in found.handle.members:
            with (member.folder / local_runtime.LOG_FILE).open("a") as log:  # type: ignore[attr-defined]
                log.write(f"{text} from {member.name}\n")

    def both_saw(text: str) -> bool:
        wanted = {f"[node0] {text} from grp", f"[node1] {text} from grp-node1"}
        return wanted <= set(seen) and wanted <= set(followed_logs)

    deadline = time.monotonic() + 15
    while not both_saw("ping"):  # until both followers read every member's log from its end
        assert time.monotonic() < deadline, (seen, followed_logs)
        write_all("ping")
        time.sleep(0.1)
    write_all("hello")  # a line each, written while followed
    while not both_saw("hello"):
        assert time.monotonic() < deadline, (seen, followed_logs)
        time.sleep(0.05)
    manage.stop_instance("grp", timeout=5)
    following.join(10)
    logs_f.join(10)
    found.close()
    assert not following.is_alive() and not logs_f.is_alive()
    assert "[node0] hello from grp" in seen and "[node1] hello from grp-node1" in seen
    assert "[node0] hello from grp" in followed_logs and "[node1] hello from grp-node1" in followed_logs
