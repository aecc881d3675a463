"""What the checks read from the machine, injectable so that tests can build machines that fail.

Everything is bounded: the Docker daemon is asked with a short timeout (a socket nothing accepts
on is refused at once; one that accepts and never answers costs ``docker_timeout`` per call).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker import DockerClient

    from nimctl.gpu import Inventory

DOCKER_TIMEOUT_S = 2.0
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Probes:
    """The machine as the checks see it. ``None`` fields mean this process's own (the real NVML,
    its user and groups)."""

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    nvml: ModuleType | Any | None = None  # a stand-in for pynvml (tests/gpu/fake_nvml.py)
    shm_path: Path = Path("/dev/shm")
    clock: Callable[[], datetime] = _now
    uid: int | None = None
    gids: tuple[int, ...] | None = None
    docker_timeout: float = DOCKER_TIMEOUT_S

    @property
    def docker_host(self) -> str:
        return self.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    def machine(self) -> Inventory:
        """This machine's GPUs through NVML (never an assumed inventory: the driver is real)."""
        from nimctl.gpu.nvml import read_nvml

        return read_nvml(nvml=self.nvml, environ=dict(self.environ))

    def user(self) -> tuple[int, tuple[int, ...]]:
        uid = os.geteuid() if self.uid is None else self.uid
        gids = tuple({os.getegid(), *os.getgroups()}) if self.gids is None else self.gids
        return uid, gids


@dataclass
class DaemonState:
    """What asking the Docker daemon found: ``info`` (its ``docker info``) when it answered, else
    ``error`` (why not); ``permission`` is False when its socket refuses this user."""

    address: str
    info: dict[str, Any] | None = None
    error: str | None = None
    permission: bool = True
    asked_at: datetime | None = None  # this machine's clock halfway through the info call
    client: DockerClient | None = None
    socket_group: str | None = None

    @property
    def answers(self) -> bool:
        return self.info is not None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def socket_access(path: Path, uid: int, gids: tuple[int, ...]) -> bool:
    """Whether ``uid`` (in ``gids``) may read and write the socket, as the kernel would decide."""
    info = path.stat()
    if uid == 0:
        return True
    if info.st_uid == uid:
        bits = stat.S_IRUSR | stat.S_IWUSR
    elif info.st_gid in gids:
        bits = stat.S_IRGRP | stat.S_IWGRP
    else:
        bits = stat.S_IROTH | stat.S_IWOTH
    return info.st_mode & bits == bits


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def ask_daemon(probes: Probes) -> DaemonState:
    """The daemon's ``docker info``, in ``probes.docker_timeout`` per call; never raises."""
    from nimctl.runtime.docker_client import _reason

    address = probes.docker_host
    state = DaemonState(address)
    if address.startswith("unix://"):
        path = Path(address.removeprefix("unix://"))
        if not path.exists():
            state.error = "No such file or directory"
            return state
        state.socket_group = _group_name(path.stat().st_gid)
        if not socket_access(path, *probes.user()):
            state.permission, state.error = False, "Permission denied"
            return state
    import docker
    from docker.errors import DockerException

    client = None
    try:
        client = docker.from_env(environment=dict(probes.environ), timeout=probes.docker_timeout)
        before = time.monotonic()
        asked = probes.clock()
        info = client.info()
        took = time.monotonic() - before
    except (DockerException, OSError) as exc:
        if client is not None:
            client.close()
        state.error = _reason(exc)
        state.permission = state.error != "Permission denied"
        return state
    state.info, state.client = info, client
    state.asked_at = asked + timedelta(seconds=took / 2)
    return state
