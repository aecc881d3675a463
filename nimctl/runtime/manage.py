"""The operations behind ``run``, ``ps``, ``logs`` and ``stop``, across both runtimes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from nimctl.errors import RuntimeUnavailableError, UsageError
from nimctl.runtime import docker_runtime, local_runtime
from nimctl.runtime.docker_client import connect, daemon_answers
from nimctl.runtime.images import BuildListener, ensure_image
from nimctl.runtime.instances import Instance, Stopped, Watched, fill_readiness
from nimctl.runtime.readiness import ReadinessListener, wait_ready
from nimctl.runtime.spec import RunSpec, Runtime

if TYPE_CHECKING:
    from docker.models.containers import Container

RuntimeChoice = Literal["auto", "docker", "local"]


def choose_runtime(requested: RuntimeChoice) -> tuple[Runtime, str | None]:
    """The runtime to use, and a line saying why when ``auto`` chose it."""
    if requested == "docker":
        return "docker", None
    if requested == "local":
        return "local", None
    if daemon_answers():
        return "docker", "runtime: Docker (its daemon answers)"
    return "local", "runtime: local process (no Docker daemon answers; --runtime docker to insist)"


@dataclass
class Started:
    """A started instance: its handle (for logs and stop) and how long readiness took."""

    spec: RunSpec
    handle: Watched
    ready_after: float | None = None


def start_instance(
    spec: RunSpec,
    *,
    on_build: BuildListener | None = None,
) -> Started:
    """Ensure the image (Docker) and start the instance; does not wait for it."""
    if spec.runtime == "docker":
        client = connect()
        assert spec.image is not None
        if docker_runtime.managed(docker_runtime.find_container(client, spec.name)) is None:
            _refuse_local_name(spec.name)
        build_client = connect(timeout=None)
        ensure_image(build_client, spec.image, device=spec.device, on_event=on_build)
        return Started(spec, docker_runtime.start(client, spec))
    _refuse_container_name(spec.name)
    return Started(spec, local_runtime.start(spec))


def _refuse_local_name(name: str) -> None:
    handle = local_runtime.find(name)
    if handle is not None and handle.state()[0] == "running":
        raise UsageError(
            f"the name {name} is in use by a local instance (pid {handle.pid})",
            hint=f"pass another --name, or stop it first: nimctl stop {name}",
        )


def _refuse_container_name(name: str) -> None:
    if not daemon_answers():
        return
    container = docker_runtime.find_container(connect(), name)
    if container is not None:
        raise UsageError(
            f"the name {name} is in use by container {container.short_id} ({container.status})",
            hint=f"pass another --name, or remove it first: nimctl stop {name}",
        )


def wait_for(started: Started, *, timeout: float, on_event: ReadinessListener | None = None) -> float:
    started.ready_after = wait_ready(started.handle, timeout=timeout, on_event=on_event)
    return started.ready_after


def list_instances(*, all_states: bool = False, readiness: bool = True) -> tuple[list[Instance], str | None]:
    """Instances of both runtimes, and a note when Docker could not be asked."""
    instances = local_runtime.list_instances(all_states=all_states)
    note = None
    try:
        client = connect(timeout=10)
    except RuntimeUnavailableError as exc:
        note = f"containers not listed: {exc.message}"
    else:
        instances = docker_runtime.list_instances(client, all_states=all_states) + instances
    instances.sort(key=lambda i: i.name)
    return (fill_readiness(instances) if readiness else instances), note


def running_instance_urls() -> list[str]:
    """URLs of the running instances; cheap enough for the client's default target."""
    instances, _ = list_instances(all_states=False, readiness=False)
    return [instance.url for instance in instances if instance.url]


@dataclass
class Found:
    name: str
    runtime: Runtime
    container: Container | None = None
    local: local_runtime.LocalHandle | None = None


def find_instance(name: str) -> Found:
    local = local_runtime.find(name)
    if local is not None:
        return Found(name, "local", local=local)
    try:
        client = connect(timeout=10)
    except RuntimeUnavailableError as exc:
        raise UsageError(
            f"no local instance named {name}, and Docker cannot be asked: {exc.message}",
            hint=exc.hint,
        ) from None
    container = docker_runtime.find_container(client, name)
    if container is None:
        raise UsageError(f"no instance named {name}", hint="nimctl ps --all lists them")
    if docker_runtime.managed(container) is None:
        raise UsageError(
            f"container {name} was not started by nimctl (no {docker_runtime.MANAGED_LABEL} label)",
            hint="manage it with docker itself",
        )
    return Found(name, "docker", container=container)


def instance_logs(name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
    """The instance's log, whole or its last ``tail`` lines, then following it when asked."""
    found = find_instance(name)
    if found.local is not None:
        yield from local_runtime.logs(found.local, follow=follow, tail=tail)
        return
    assert found.container is not None
    buffer = ""
    for chunk in docker_runtime.logs(found.container, follow=follow, tail=tail):
        buffer += chunk.decode("utf-8", "replace")
        *lines, buffer = buffer.split("\n")
        yield from lines
    if buffer:
        yield buffer


def stop_instance(name: str, *, timeout: int = docker_runtime.STOP_TIMEOUT_S) -> Stopped:
    found = find_instance(name)
    if found.local is not None:
        return local_runtime.stop(found.local, timeout)
    assert found.container is not None
    return docker_runtime.stop(found.container, timeout)


def stop_handle(started: Started, *, timeout: int = docker_runtime.STOP_TIMEOUT_S) -> Stopped:
    """Stop and remove what ``start_instance`` started (foreground Ctrl-C, failed start)."""
    handle = started.handle
    if isinstance(handle, local_runtime.LocalHandle):
        return local_runtime.stop(handle, timeout)
    assert isinstance(handle, docker_runtime.ContainerHandle)
    return docker_runtime.stop(handle.container, timeout)


def stop_all(*, timeout: int = docker_runtime.STOP_TIMEOUT_S) -> list[Stopped]:
    instances, _ = list_instances(all_states=True, readiness=False)
    return [stop_instance(instance.name, timeout=timeout) for instance in instances]
