"""Instances as Docker containers: start, list, logs, stop, all through the Docker SDK."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nimctl.errors import RuntimeFailure, RuntimeUnavailableError, UsageError
from nimctl.runtime.instances import Instance, Stopped, parse_time
from nimctl.runtime.ports import check_port_free, port_in_use_error
from nimctl.runtime.spec import CONTAINER_CACHE, CONTAINER_PORT, LABEL, MANAGED_LABEL, RunSpec

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

STOP_TIMEOUT_S = 30


class ContainerHandle:
    """A started container, for the readiness wait and the foreground log follow."""

    def __init__(self, container: Container, url: str) -> None:
        self.container = container
        self.name = container.name
        self.url = url

    def state(self) -> tuple[str, int | None]:
        from docker.errors import NotFound

        try:
            self.container.reload()
        except NotFound:
            return "removed", None
        state = self.container.attrs.get("State", {})
        status = str(state.get("Status", "unknown"))
        return status, (state.get("ExitCode") if status in {"exited", "dead"} else None)

    def last_lines(self, count: int) -> list[str]:
        from docker.errors import NotFound

        try:
            raw = self.container.logs(tail=count)
        except NotFound:
            return []
        return raw.decode("utf-8", "replace").splitlines()[-count:]

    def follow(self) -> Iterator[str]:
        import time

        buffer = ""
        for chunk in self.container.logs(stream=True, follow=True, since=int(time.time())):
            buffer += chunk.decode("utf-8", "replace")
            *lines, buffer = buffer.split("\n")
            yield from lines
        if buffer:
            yield buffer


def find_container(client: DockerClient, name: str) -> Container | None:
    from docker.errors import NotFound

    try:
        container = client.containers.get(name)
    except NotFound:
        return None
    return container


def start(client: DockerClient, spec: RunSpec) -> ContainerHandle:
    """Create and start the container; every failure removes what was created."""
    from docker.errors import APIError
    from docker.types import DeviceRequest

    existing = find_container(client, spec.name)
    if existing is not None:
        raise UsageError(
            f"the name {spec.name} is in use by container {existing.short_id} ({existing.status})",
            hint=f"pass another --name, or remove it first: nimctl stop {spec.name}",
        )
    check_port_free(spec.host, spec.port)
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    volumes = {str(spec.cache_dir): {"bind": CONTAINER_CACHE, "mode": "rw"}}
    for mount in spec.mounts:
        volumes[str(mount.source)] = {"bind": mount.target, "mode": "ro" if mount.read_only else "rw"}
    device_requests = []
    if spec.gpus.kind == "all":
        device_requests.append(DeviceRequest(count=-1, capabilities=[["gpu"]]))
    elif spec.gpus.kind == "count":
        device_requests.append(DeviceRequest(count=spec.gpus.count, capabilities=[["gpu"]]))
    elif spec.gpus.kind == "ids":
        device_requests.append(DeviceRequest(device_ids=list(spec.gpus.ids), capabilities=[["gpu"]]))
    base, _, retries = spec.restart.partition(":")
    restart_policy = {"Name": base, "MaximumRetryCount": int(retries or 0)} if base != "no" else None

    try:
        container = client.containers.create(
            spec.image,
            command=spec.engine_args or None,
            name=spec.name,
            environment=spec.env,
            labels=spec.labels,
            ports={f"{CONTAINER_PORT}/tcp": (spec.host, spec.port)},
            volumes=volumes,
            user=spec.user,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            shm_size=spec.shm_size,
            device_requests=device_requests or None,
            restart_policy=restart_policy,
            detach=True,
        )
    except APIError as exc:
        raise _start_error(exc, spec) from None
    try:
        container.start()
    except APIError as exc:
        with contextlib.suppress(APIError):
            container.remove(force=True)
        raise _start_error(exc, spec) from None
    return ContainerHandle(container, spec.url)


def _start_error(exc: Exception, spec: RunSpec) -> Exception:
    text = str(getattr(exc, "explanation", None) or exc)
    if "port is already allocated" in text or "address already in use" in text:
        return port_in_use_error(spec.host, spec.port)
    if "could not select device driver" in text or "nvidia" in text.lower():
        return RuntimeUnavailableError(
            "GPUs were asked for, but Docker has no NVIDIA container runtime",
            hint="install the NVIDIA Container Toolkit and restart Docker, or run with --gpus none",
        )
    if "Conflict" in text and "name" in text:
        return UsageError(f"the name {spec.name} is in use", hint="pass another --name")
    return RuntimeFailure(f"could not start the container: {text.splitlines()[0]}")


def list_instances(client: DockerClient, *, all_states: bool) -> list[Instance]:
    containers = client.containers.list(all=all_states, filters={"label": f"{MANAGED_LABEL}=true"})
    return [to_instance(container) for container in containers]


def to_instance(container: Container) -> Instance:
    labels = container.labels
    state = container.attrs.get("State", {})
    status = str(state.get("Status", container.status))
    return Instance(
        name=container.name,
        runtime="docker",
        model=labels.get(f"{LABEL}.model", "?"),
        profile_id=labels.get(f"{LABEL}.profile"),
        profile_name=labels.get(f"{LABEL}.profile-name"),
        state=status,
        exit_code=state.get("ExitCode") if status in {"exited", "dead"} else None,
        url=labels.get(f"{LABEL}.url", ""),
        started_at=parse_time(state.get("StartedAt")),
        ident=container.short_id,
    )


def managed(container: Container | None) -> Container | None:
    """The container if nimctl started it (its label says so), else None."""
    if container is not None and container.labels.get(MANAGED_LABEL) == "true":
        return container
    return None


def logs(container: Container, *, follow: bool, tail: int | None) -> Iterator[bytes]:
    if follow:
        yield from container.logs(stream=True, follow=True, tail=tail if tail is not None else "all")
    else:
        yield container.logs(tail=tail if tail is not None else "all")


def stop(container: Container, timeout: int = STOP_TIMEOUT_S) -> Stopped:
    """SIGTERM, up to ``timeout`` seconds, then SIGKILL; then remove."""
    from docker.errors import APIError, NotFound

    was_running = False
    with contextlib.suppress(NotFound):
        container.reload()
        was_running = container.status in {"running", "restarting", "paused"}
        if was_running:
            container.stop(timeout=timeout)
        container.reload()
    final = to_instance(container)
    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as exc:
        raise RuntimeFailure(f"could not remove {container.name}: {exc.explanation or exc}") from None
    return Stopped(final, was_running)
