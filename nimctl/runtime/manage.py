"""The operations behind ``run``, ``ps``, ``logs`` and ``stop``, across both runtimes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from nimctl.errors import RuntimeUnavailableError, UsageError
from nimctl.runtime import docker_runtime, local_runtime
from nimctl.runtime.docker_client import connect, daemon_answers, may_answer
from nimctl.runtime.instances import Instance, Stopped, Watched, fill_readiness
from nimctl.runtime.spec import RunSpec, Runtime

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from nimctl.runtime.images import BuildListener
    from nimctl.runtime.readiness import ReadinessListener

RuntimeChoice = Literal["auto", "docker", "local"]
# The client's default target is looked up before every client command: Docker gets this long.
QUICK_DOCKER_TIMEOUT_S = 1.0
DOCKER_TIMEOUT_S = 10


class Choice(NamedTuple):
    runtime: Runtime
    note: str | None  # why ``auto`` chose it
    docker_answers: bool | None  # what asking the daemon found; None: not asked


def choose_runtime(requested: RuntimeChoice) -> Choice:
    """The runtime to use, and a line saying why when ``auto`` chose it."""
    if requested == "docker":
        return Choice("docker", None, None)
    if requested == "local":
        return Choice("local", None, None)
    if daemon_answers():
        return Choice("docker", "runtime: Docker (its daemon answers)", True)
    return Choice(
        "local", "runtime: local process (no Docker daemon answers; --runtime docker to insist)", False
    )


@dataclass
class Started:
    """A started instance: its handle (for logs and stop) and how long readiness took."""

    spec: RunSpec
    handle: Watched
    ready_after: float | None = None
    client: DockerClient | None = None  # the connection a container's handle talks through

    def close(self) -> None:
        """Let go of the Docker connection (the instance itself is left as it is)."""
        if self.client is not None:
            self.client.close()
            self.client = None


def start_instance(
    spec: RunSpec,
    *,
    on_build: BuildListener | None = None,
    docker_answers: bool | None = None,
) -> Started:
    """Ensure the image (Docker) and start the instance; does not wait for it.

    ``docker_answers`` is what :func:`choose_runtime` already found, so the daemon is not
    asked twice. The caller closes what it gets (:meth:`Started.close`, or :func:`stop_handle`).
    """
    if spec.runtime == "docker":
        # Here, not at the top: every client command imports this module for its default target.
        from nimctl.runtime.images import ensure_image

        assert spec.image is not None
        client = connect()
        try:
            if docker_runtime.managed(docker_runtime.find_container(client, spec.name)) is None:
                _refuse_local_name(spec.name)
            ensure_image(client, spec.image, device=spec.device, on_event=on_build)
            return Started(spec, docker_runtime.start(client, spec), client=client)
        except BaseException:
            client.close()
            raise
    if docker_answers is not False:
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
    if not may_answer():
        return
    try:
        client = connect(timeout=5)
    except RuntimeUnavailableError:
        return  # no daemon: no container can hold the name
    try:
        container = docker_runtime.find_container(client, name)
    finally:
        client.close()
    if container is not None:
        raise UsageError(
            f"the name {name} is in use by container {container.short_id} ({container.status})",
            hint=f"pass another --name, or remove it first: nimctl stop {name}",
        )


def wait_for(started: Started, *, timeout: float, on_event: ReadinessListener | None = None) -> float:
    from nimctl.runtime.readiness import wait_ready

    started.ready_after = wait_ready(started.handle, timeout=timeout, on_event=on_event)
    return started.ready_after


def list_instances(*, all_states: bool = False, readiness: bool = True) -> tuple[list[Instance], str | None]:
    """Instances of both runtimes, and a note when Docker could not be asked."""
    instances = local_runtime.list_instances(all_states=all_states)
    note = None
    try:
        client = connect(timeout=DOCKER_TIMEOUT_S)
    except RuntimeUnavailableError as exc:
        note = f"containers not listed: {exc.message}"
    else:
        try:
            instances = docker_runtime.list_instances(client, all_states=all_states) + instances
        finally:
            client.close()
    instances.sort(key=lambda i: i.name)
    return (fill_readiness(instances) if readiness else instances), note


def running_instance_urls(*, limit: int = 2) -> list[str]:
    """URLs of running instances, at most ``limit``: enough for the client's default target.

    Local instances are read first (files only); Docker is asked only while fewer than
    ``limit`` are found and a daemon may answer, with a short timeout, and any failure there
    leaves the local answer.
    """
    urls = [i.url for i in local_runtime.list_instances(all_states=False) if i.url]
    if len(urls) >= limit or not may_answer():
        return urls[:limit]
    from docker.errors import DockerException

    try:
        client = connect(timeout=QUICK_DOCKER_TIMEOUT_S)
    except RuntimeUnavailableError:
        return urls
    try:
        containers = docker_runtime.list_instances(client, all_states=False)
    except (DockerException, OSError):  # a slow daemon (requests' timeouts are OSErrors)
        containers = []
    finally:
        client.close()
    return (urls + [i.url for i in containers if i.url])[:limit]


@dataclass
class Found:
    name: str
    runtime: Runtime
    container: Container | None = None
    local: local_runtime.LocalHandle | None = None
    client: DockerClient | None = None  # the connection ``container`` talks through

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def find_instance(name: str) -> Found:
    """The instance called ``name``; close what it returns (its Docker connection) when done."""
    local = local_runtime.find(name)
    if local is not None:
        return Found(name, "local", local=local)
    try:
        client = connect(timeout=DOCKER_TIMEOUT_S)
    except RuntimeUnavailableError as exc:
        raise UsageError(
            f"no local instance named {name}, and Docker cannot be asked: {exc.message}",
            hint=exc.hint,
        ) from None
    try:
        container = docker_runtime.find_container(client, name)
        if container is None:
            raise UsageError(f"no instance named {name}", hint="nimctl ps --all lists them")
        if docker_runtime.managed(container) is None:
            raise UsageError(
                f"container {name} was not started by nimctl (no {docker_runtime.MANAGED_LABEL} label)",
                hint="manage it with docker itself",
            )
    except BaseException:
        client.close()
        raise
    return Found(name, "docker", container=container, client=client)


def instance_logs(name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
    """The instance's log, whole or its last ``tail`` lines, then following it when asked."""
    found = find_instance(name)
    try:
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
    finally:
        found.close()


def stop_instance(name: str, *, timeout: int = docker_runtime.STOP_TIMEOUT_S) -> Stopped:
    found = find_instance(name)
    try:
        if found.local is not None:
            return local_runtime.stop(found.local, timeout)
        assert found.container is not None
        return docker_runtime.stop(found.container, timeout)
    finally:
        found.close()


def stop_handle(started: Started, *, timeout: int = docker_runtime.STOP_TIMEOUT_S) -> Stopped:
    """Stop and remove what ``start_instance`` started (foreground Ctrl-C, failed start)."""
    handle = started.handle
    try:
        if isinstance(handle, local_runtime.LocalHandle):
            return local_runtime.stop(handle, timeout)
        assert isinstance(handle, docker_runtime.ContainerHandle)
        return docker_runtime.stop(handle.container, timeout)
    finally:
        started.close()


def stop_all(*, timeout: int = docker_runtime.STOP_TIMEOUT_S) -> list[Stopped]:
    instances, _ = list_instances(all_states=True, readiness=False)
    return [stop_instance(instance.name, timeout=timeout) for instance in instances]
