"""nim-serve's leader and worker roles, as real processes on loopback.

The group's failures (a worker killed, the leader killed) are proven through ``nimctl run
--nodes 2`` in tests/runtime/test_multinode_local.py and tests/docker/test_multinode_docker.py;
this module covers what each role does on its own, and a clean stop of the whole group.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from nimctl import contract
from nimctl.runtime.group import free_port_pair
from nimctl.server.membership import GroupLeader
from tests.server_process import ServerProcess, free_port

MODEL = "builtin://tiny-vlm"


def member_env(rank: int, join_port: int, **more: str) -> dict[str, str]:
    env = {
        "NIM_NUM_COMPUTE_NODES": "2",
        "NIM_NODE_RANK": str(rank),
        "NIM_LEADER_ADDRESS": "127.0.0.1",
        "NIM_LEADER_PORT": str(join_port),
        "NIM_NODE_ADDRESS": f"127.0.0.{rank + 1}",
    }
    if rank:
        env["NIMCTL_SERVER_HOST"] = f"127.0.0.{rank + 1}"
    return {**env, **more}


def dry_run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimctl.server", "--dry-run"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def health(url: str, path: str) -> tuple[int, dict[str, object]]:
    answer = httpx.get(url + path, timeout=5)
    return answer.status_code, answer.json()


def test_a_rank_outside_the_group_is_one_line_at_start() -> None:
    done = dry_run({"NIM_NUM_COMPUTE_NODES": "2", "NIM_NODE_RANK": "2", "NIM_LEADER_ADDRESS": "x"})
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "Error: NIM_NODE_RANK=2 is outside the group: NIM_NUM_COMPUTE_NODES=2 has ranks 0 to 1"
    )


def test_a_worker_needs_the_leaders_address() -> None:
    done = dry_run({"NIM_NUM_COMPUTE_NODES": "2", "NIM_NODE_RANK": "1"})
    assert done.returncode == 2
    assert "a worker (NIM_NODE_RANK=1) needs NIM_LEADER_ADDRESS" in done.stderr


def test_a_profile_for_other_node_count_is_refused_at_start() -> None:
    done = dry_run({"NIM_MODEL_PROFILE": "vllm-fp32-tp2-pp1-cpu-2node"})  # one node, by default
    assert done.returncode == 8
    assert "needs 2 nodes" in done.stderr.splitlines()[0]


def test_the_dry_run_shows_each_role_in_the_engines_own_flags() -> None:
    port = free_port_pair(contract.DEFAULT_LEADER_PORT)
    leader = json.loads(dry_run(member_env(0, port)).stdout)
    worker = json.loads(dry_run(member_env(1, port)).stdout)
    assert leader["profile_name"] == worker["profile_name"] == "vllm-fp32-tp2-pp1-cpu-2node"
    group = f"--nnodes 2 --node-rank {{}} --master-addr {{}} --master-port {port + 1}"
    assert group.format(0, "'<leader-ip-at-launch>'") in leader["engine_command_line"]
    assert "vllm.entrypoints.openai.api_server" in leader["engine_command_line"]
    assert worker["engine_command_line"].endswith(
        group.format(1, "'<leader-ip-at-launch>'") + " --headless"
    )
    assert "nimctl.server.headless" in worker["engine_command_line"]
    assert worker["node"] == {
        "nodes": 2, "rank": 1, "role": "worker", "leader_address": "127.0.0.1", "join_port": port,
        "engine_master_port": port + 1, "node_address": "127.0.0.2",
    }


def test_a_worker_without_a_leader_answers_probes_then_fails_after_the_named_wait(tmp_path: Path) -> None:
    port = free_port_pair(contract.DEFAULT_LEADER_PORT)  # nothing listens there
    worker = ServerProcess(MODEL, tmp_path / "cache", tmp_path / "worker.log",
                           env=member_env(1, port, NIMCTL_LEADER_WAIT="4"))
    worker.port = free_port()
    url = f"http://127.0.0.2:{worker.port}"
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                live = health(url, "/v1/health/live")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and worker.process and worker.process.poll() is None
                time.sleep(0.1)
        ready = health(url, "/v1/health/ready")
        assert live[0] == 200 and ready[0] == 503
        assert ready[1]["message"] == f"node 1 of 2 (worker): joining the leader at 127.0.0.1:{port}"
        other = httpx.post(url + "/v1/chat/completions", json={}, timeout=5)
        assert other.status_code == 404 and "serves no API" in other.json()["error"]["message"]
        assert worker.process is not None
        assert worker.process.wait(30) == 5
    finally:
        worker.stop()
    log = worker.log_path.read_text()
    assert f"the leader 127.0.0.1:{port} did not answer within 4 s (NIMCTL_LEADER_WAIT)" in log


@pytest.fixture
def foreign_leader() -> Iterator[int]:
    """A leader of a group running another profile: it refuses every worker of ours."""
    port = free_port_pair(contract.DEFAULT_LEADER_PORT)
    loop = asyncio.new_event_loop()
    leader = GroupLeader(2, "another-profile", on_lost=lambda rank, why: None)
    loop.run_until_complete(leader.start("127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    asyncio.run_coroutine_threadsafe(leader.close("done"), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_a_worker_the_leader_refuses_exits_2_with_the_reason(tmp_path: Path, foreign_leader: int) -> None:
    worker = ServerProcess(MODEL, tmp_path / "cache", tmp_path / "worker.log",
                           env=member_env(1, foreign_leader))
    worker.start()
    try:
        assert worker.process is not None
        assert worker.process.wait(60) == 2
    finally:
        worker.stop()
    assert "the leader refused this node: the worker runs profile" in worker.log_path.read_text()


def tree(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]


@pytest.mark.engine
def test_the_leader_waits_for_its_worker_then_a_stop_ends_the_whole_group(
    tmp_path: Path, model_cache: Path
) -> None:
    port = free_port_pair(contract.DEFAULT_LEADER_PORT)
    cache = model_cache  # the session's: the tiny model is generated once
    leader = ServerProcess(MODEL, cache, tmp_path / "leader.log", env=member_env(0, port))
    worker = ServerProcess(MODEL, cache, tmp_path / "worker.log", env=member_env(1, port))
    leader.start()
    try:
        deadline = time.monotonic() + 60
        while leader.poll_health()[0] != 200:
            assert time.monotonic() < deadline, leader.log_tail()
            time.sleep(0.2)
        status, body = health(leader.url, "/v1/health/ready")
        assert status == 503 and str(body["message"]).endswith("waiting for workers: 1 of 2 joined")
        worker.start()
        leader.wait_ready()
        assert health(f"http://127.0.0.2:{worker.port}", "/v1/health/ready")[0] == 200
        chat = httpx.post(leader.url + "/v1/chat/completions", timeout=60, json={
            "model": "tiny-vlm", "max_tokens": 4, "ignore_eos": True,
            "messages": [{"role": "user", "content": "hello"}],
        })
        assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] == 4
        processes = tree(leader.process) + tree(worker.process)  # type: ignore[arg-type]
        assert worker.process is not None and leader.process is not None
        leader.process.send_signal(signal.SIGTERM)
        assert leader.process.wait(60) == 0
        assert worker.process.wait(60) == 0  # the leader said goodbye: a clean stop, not a loss
    finally:
        leader.stop()
        worker.stop()
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert "the leader stopped the group" in worker.log_path.read_text()
