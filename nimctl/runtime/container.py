"""One description of the container ``nimctl run`` starts, rendered twice.

:func:`describe_container` translates a :class:`RunSpec` into a :class:`ContainerDescription`
once: GPUs, capabilities, shared memory, restart policy, volumes, the published port, user,
labels, environment and command. :func:`create_arguments` renders it as the docker SDK's
``containers.create`` keywords (what the Docker runtime starts); :func:`docker_run_argv` as the
``docker run`` words ``--dry-run`` prints. Neither decides anything, so the two cannot drift.
Secrets are nobody's business here: ``--dry-run`` masks a description before rendering it
(:mod:`nimctl.runtime.dry_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nimctl import contract
from nimctl.runtime.spec import url_host

if TYPE_CHECKING:
    from nimctl.runtime.gpu_request import GpuRequest
    from nimctl.runtime.spec import RunSpec

# Every container nimctl starts drops all capabilities and may not gain privileges.
CAP_DROP = ("ALL",)
SECURITY_OPT = ("no-new-privileges",)


@dataclass(frozen=True)
class Volume:
    source: str  # a host path
    target: str  # where the container sees it
    read_only: bool


@dataclass(frozen=True)
class ContainerDescription:
    """The container, as both the SDK call and the ``docker run`` line spell it."""

    name: str
    image: str
    command: tuple[str, ...]  # the engine arguments, after the image's entrypoint
    user: str  # uid:gid
    shm_size: str | None
    gpus: GpuRequest
    restart: str  # Docker's spelling: no, on-failure[:N], always, unless-stopped
    host: str  # the host address the port is published on (bare, also for IPv6)
    host_port: int
    volumes: tuple[Volume, ...]  # the model cache first
    env: tuple[tuple[str, str], ...]  # in the order the run spec holds them
    labels: tuple[tuple[str, str], ...]
    container_port: int = contract.CONTAINER_PORT
    publish: bool = True  # a group's worker publishes no port
    network: str | None = None  # a group's own network (None: Docker's default bridge)
    cpus: float | None = None  # a group member's share of the CPUs (None: no limit)
    cap_drop: tuple[str, ...] = CAP_DROP
    security_opt: tuple[str, ...] = SECURITY_OPT


def describe_container(spec: RunSpec) -> ContainerDescription:
    """The container that runs ``spec``: its cache mounted read-write, its other mounts as planned."""
    cache = Volume(str(spec.cache_dir), contract.CONTAINER_CACHE, read_only=False)
    mounts = tuple(Volume(str(m.source), m.target, m.read_only) for m in spec.mounts)
    return ContainerDescription(
        name=spec.name,
        image=spec.image or "",
        command=tuple(spec.engine_args),
        user=spec.user,
        shm_size=spec.shm_size,
        gpus=spec.gpus,
        restart=spec.restart,
        host=spec.host,
        host_port=spec.port,
        volumes=(cache, *mounts),
        env=tuple(spec.env.items()),
        labels=tuple(spec.labels.items()),
        publish=spec.publish,
        network=spec.network,
        cpus=spec.cpus,
    )


def create_arguments(description: ContainerDescription) -> dict[str, Any]:
    """The keywords of ``client.containers.create`` (the image is the first of them, by name).

    Always detached: in the foreground nimctl follows the log and removes the container itself,
    which is what the ``docker run`` line calls ``--rm``.
    """
    base, _, retries = description.restart.partition(":")
    restart_policy = {"Name": base, "MaximumRetryCount": int(retries or 0)} if base != "no" else None
    return {
        "image": description.image,
        "command": list(description.command) or None,
        "name": description.name,
        "environment": dict(description.env),
        "labels": dict(description.labels),
        "ports": (
            {f"{description.container_port}/tcp": (description.host, description.host_port)}
            if description.publish
            else {}
        ),
        "volumes": {
            volume.source: {"bind": volume.target, "mode": "ro" if volume.read_only else "rw"}
            for volume in description.volumes
        },
        "user": description.user,
        "cap_drop": list(description.cap_drop),
        "security_opt": list(description.security_opt),
        "shm_size": description.shm_size,
        "device_requests": _device_requests(description.gpus) or None,
        "restart_policy": restart_policy,
        "detach": True,
        # A group member's (only then: a lone container's keywords stay what they were).
        **({"network": description.network} if description.network else {}),
        **({"nano_cpus": round(description.cpus * 1e9)} if description.cpus else {}),
    }


def _device_requests(gpus: GpuRequest) -> list[Any]:
    """``--gpus`` as the SDK's device requests (what ``docker run --gpus`` sends the daemon)."""
    if gpus.kind == "none":
        return []
    from docker.types import DeviceRequest  # here: the dry run and the CLI need no SDK

    if gpus.kind == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if gpus.kind == "count":
        return [DeviceRequest(count=gpus.count, capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=list(gpus.ids), capabilities=[["gpu"]])]


def removes_itself(description: ContainerDescription, *, detach: bool) -> bool:
    """Whether the ``docker run`` line says ``--rm``: a foreground instance goes when it ends
    (nimctl removes it itself), except with a restart policy, which docker refuses with ``--rm``."""
    return not detach and description.restart == "no"


def docker_run_argv(description: ContainerDescription, *, detach: bool) -> list[str]:
    """The ``docker run`` words for the container; ``detach``: ``nimctl run -d``."""
    argv = ["docker", "run"]
    if detach:
        argv.append("-d")
    if removes_itself(description, detach=detach):
        argv.append("--rm")
    argv += ["--name", description.name, "--user", description.user]
    for capability in description.cap_drop:
        argv += ["--cap-drop", capability]
    for option in description.security_opt:
        argv += ["--security-opt", option]
    if description.shm_size:
        argv += ["--shm-size", description.shm_size]
    gpus = description.gpus.docker_flag()
    if gpus:
        argv += ["--gpus", gpus]
    if description.restart != "no":
        argv += ["--restart", description.restart]
    if description.network:
        argv += ["--network", description.network]
    if description.cpus:
        argv += ["--cpus", f"{description.cpus:g}"]
    if description.publish:
        argv += ["-p", f"{url_host(description.host)}:{description.host_port}:{description.container_port}"]
    for volume in description.volumes:
        argv += ["-v", f"{volume.source}:{volume.target}{':ro' if volume.read_only else ''}"]
    for key, value in description.env:
        argv += ["-e", f"{key}={value}"]
    for key, value in description.labels:
        argv += ["--label", f"{key}={value}"]
    argv.append(description.image)
    argv += description.command
    return argv
