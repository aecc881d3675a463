"""This server's place in a multi-node group, and what it adds to the engine's launch.

The group runs on vLLM's own multi-node runtime (the multiprocessing executor with
``--nnodes/--node-rank/--master-addr``; workers ``--headless``), carried by torch.distributed.
nimctl adds nothing to the engine's traffic: it only tells every node its role, and watches the
members over its own join connection (:mod:`nimctl.server.membership`), since vLLM does not
notice a lost worker until a request reaches it.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nimctl import contract
from nimctl.errors import ConfigError

if TYPE_CHECKING:
    from nimctl.profiles import Profile
    from nimctl.server.config import ServerConfig

# The worker's engine: vLLM's headless mode, through nimctl's own launcher (see that module).
HEADLESS_MODULE = "nimctl.server.headless"
# A documentation address (RFC 5737): connecting a UDP socket to it sends nothing, yet tells
# which local address the routing table would use to leave this host.
_ROUTE_PROBE = ("192.0.2.1", 9)


@dataclass(frozen=True)
class NodeRole:
    nodes: int
    rank: int
    leader_address: str | None
    join_port: int
    node_address: str | None  # NIM_NODE_ADDRESS; None: found when the group forms
    leader_wait: float

    @classmethod
    def from_config(cls, config: ServerConfig) -> NodeRole:
        return cls(
            nodes=config.num_compute_nodes,
            rank=config.node_rank,
            leader_address=config.leader_address,
            join_port=config.leader_port,
            node_address=config.node_address,
            leader_wait=config.leader_wait,
        )

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def is_worker(self) -> bool:
        return self.rank > 0

    @property
    def master_port(self) -> int:
        """The engine's torch.distributed store, on the leader: the port after the join port."""
        return self.join_port + contract.ENGINE_MASTER_PORT_OFFSET

    @property
    def name(self) -> str:
        return f"node {self.rank} of {self.nodes}" + (" (leader)" if self.is_leader else " (worker)")

    def describe(self) -> dict[str, object]:
        return {
            "nodes": self.nodes,
            "rank": self.rank,
            "role": "leader" if self.is_leader else "worker",
            "leader_address": self.leader_address,
            "join_port": self.join_port,
            "engine_master_port": self.master_port,
            "node_address": self.node_address,
        }


def check_profile_nodes(role: NodeRole, profile: Profile | None) -> None:
    """The group runs one profile across all its nodes: its node count must be the group's."""
    if profile is None or profile.nodes == role.nodes:
        return
    wanted = profile.nodes
    raise ConfigError(
        f"profile {profile.name} runs on {wanted} node(s), but {contract.NUM_COMPUTE_NODES}={role.nodes}",
        hint=f"set {contract.NUM_COMPUTE_NODES}={wanted}, or pin a profile for {role.nodes} node(s)",
    )


def engine_group_args(role: NodeRole, leader_ip: str) -> list[str]:
    """The engine's place in the group; the same on every node but for the rank."""
    return [
        "--distributed-executor-backend",
        "mp",
        "--nnodes",
        str(role.nodes),
        "--node-rank",
        str(role.rank),
        "--master-addr",
        leader_ip,
        "--master-port",
        str(role.master_port),
    ]


def engine_group_env(node_ip: str) -> dict[str, str]:
    # vLLM advertises VLLM_HOST_IP for its message queue; unset, it takes the first interface's
    # address, which other nodes may not reach (a second network, a container's other side).
    return {"VLLM_HOST_IP": node_ip}


def headless_command(model_dir: str, served_name: str, args: list[str]) -> list[str]:
    """A worker's engine command line: the engine arguments of the leader, run headless."""
    return [
        sys.executable,
        "-m",
        HEADLESS_MODULE,
        "--model",
        model_dir,
        "--served-model-name",
        served_name,
        *args,
        "--headless",
    ]


def resolve(host: str) -> str:
    """An IPv4 address for ``host``; a name that does not resolve is a ConfigError."""
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise ConfigError(
            f"cannot resolve {contract.LEADER_ADDRESS} {host!r}: {exc}",
            hint="give an address or a name every node of the group resolves",
        ) from None


def leader_ip(role: NodeRole) -> str:
    """The leader's own address as the workers reach it (its engine advertises it)."""
    if role.node_address:
        return resolve(role.node_address)
    if role.leader_address:
        return resolve(role.leader_address)
    return routed_address()


def routed_address() -> str:
    """The local address the routing table uses to leave this host (loopback when there is none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(_ROUTE_PROBE)
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"
