"""The operations behind ``run``, ``ps``, ``logs`` and ``stop``, across both runtimes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

from nimctl import contract
from nimctl.errors import NimctlError, RuntimeUnavailableError, UsageError
from nimctl.runtime import docker_runtime, local_runtime
from nimctl.runtime.docker_client import (
    PERMISSION_HINT,
    DockerPermissionError,
    connect,
    daemon_address,
    may_answer,
    probe_daemon,
    running_container_urls,
    translated,
)
from nimctl.runtime.instances import (
    STOP_TIMEOUT_S,
    Instance,
    Stopped,
    Watched,
    fill_readiness,
    name_in_use_error,
)
from nimctl.runtime.ports import check_port_free
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
    problem = probe_daemon()
    if problem is None:
        return Choice("docker", "runtime: Docker (its daemon answers)", True)
    if isinstance(problem, DockerPermissionError):
        # A daemon is there, but this user may not use it: say so rather than "no daemon".
        why = f"Docker's socket {daemon_address()} refused permission; to use Docker: {PERMISSION_HINT}"
    else:
        why = "no Docker daemon answers; --runtime docker to insist"
    return Choice("local", f"runtime: local process ({why})", False)


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
            # Both before the build, which can take minutes.
            _refuse_container_name(spec.name, client)
            local_runtime.check_name_free(spec.name)
            check_port_free(spec.host, spec.port)
            ensure_image(client, spec.image, device=spec.device, on_event=on_build)
            # An ended local instance of this name would otherwise hide the container from
            # `logs` and `stop`; one started meanwhile keeps its record (and its name check).
            with contextlib.suppress(UsageError):
                local_runtime.clear_ended(spec.name)
            handle = docker_runtime.start(client, spec)
        except BaseException:
            client.close()
            raise
        return Started(spec, handle, client=client)
    if docker_answers is not False and may_answer():
        try:
            client = connect(timeout=5)
        except RuntimeUnavailableError:
            client = None  # no daemon: no container can hold the name
        try:
            _refuse_container_name(spec.name, client)
        finally:
            if client is not None:
                client.close()
    return Started(spec, local_runtime.start(spec))


def _refuse_container_name(name: str, client: DockerClient | None) -> None:
    """Any container holding the name refuses it, ended or not (Docker's own rule)."""
    if client is None:
        return
    with translated("checking the name", name):
        container = docker_runtime.find_container(client, name)
    if container is not None:
        raise name_in_use_error(name, docker_runtime.holder(container))


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
            with translated("listing containers"):
                instances = docker_runtime.list_instances(client, all_states=all_states) + instances
        except NimctlError as exc:
            note = f"containers not listed: {exc.message}"
        finally:
            client.close()
    instances.sort(key=lambda i: i.name)
    return (fill_readiness(instances) if readiness else instances), note


def running_instance_urls(*, limit: int = 2) -> list[str]:
    """URLs of running instances, at most ``limit``: enough for the client's default target.

    Local instances are read first (files only); Docker is asked only while fewer than
    ``limit`` are found and a daemon may answer, with a short timeout (over its Unix socket
    without the SDK), and any failure there leaves the local answer.
    """
    urls = [i.url for i in local_runtime.list_instances(all_states=False) if i.url]
    if len(urls) >= limit or not may_answer():
        return urls[:limit]
    quick = running_container_urls(QUICK_DOCKER_TIMEOUT_S)
    if quick is not None:
        return (urls + quick)[:limit]
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
    """The instance called ``name``; close what it returns (its Docker connection) when done.

    A name can be on both sides: an ended local instance and a container (left by an older
    nimctl, or a race). The running one wins, else the one started last, so that ``stop`` and
    ``logs`` never act on an old record while a live instance of the name goes on.
    """
    local = local_runtime.find(name)
    if local is not None and local.state()[0] == "running":
        return Found(name, "local", local=local)
    try:
        client = connect(timeout=DOCKER_TIMEOUT_S)
    except RuntimeUnavailableError as exc:
        if local is not None:
            return Found(name, "local", local=local)
        raise UsageError(
            f"no local instance named {name}, and Docker cannot be asked: {exc.message}",
            hint=exc.hint,
        ) from None
    try:
        with translated("looking it up", name):
            container = docker_runtime.find_container(client, name)
        if docker_runtime.managed(container) is not None:
            assert container is not None
            if local is None or _container_wins(container, local):
                return Found(name, "docker", container=container, client=client)
        elif container is not None and local is None:
            raise UsageError(
                f"container {name} was not started by nimctl (no {contract.MANAGED_LABEL} label)",
                hint="manage it with docker itself",
            )
    except BaseException:
        client.close()
        raise
    client.close()
    if local is not None:
        return Found(name, "local", local=local)
    raise UsageError(f"no instance named {name}", hint="nimctl ps --all lists them")


def _container_wins(container: Container, local: local_runtime.LocalHandle) -> bool:
    """Against an ended local instance: a container that runs, or that started later."""
    found = docker_runtime.to_instance(container)
    if found.running:
        return True
    ours = local.to_instance().started_at
    return ours is None or (found.started_at is not None and found.started_at >= ours)


def instance_logs(name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
    """The instance's log, whole or its last ``tail`` lines, then following it when asked."""
    found = find_instance(name)
    try:
        if found.local is not None:
            yield from local_runtime.logs(found.local, follow=follow, tail=tail)
            return
        assert found.container is not None
        with translated("reading its log", name):
            yield from docker_runtime.logs(found.container, follow=follow, tail=tail)
    finally:
        found.close()


def stop_instance(name: str, *, timeout: int = STOP_TIMEOUT_S) -> Stopped:
    found = find_instance(name)
    try:
        if found.local is not None:
            return local_runtime.stop(found.local, timeout)
        assert found.container is not None
        stopped = docker_runtime.stop(found.container, timeout)
    finally:
        found.close()
    # An ended local record of the same name goes too, so that it cannot shadow the name later.
    with contextlib.suppress(UsageError):
        local_runtime.clear_ended(name)
    return stopped


def stop_handle(started: Started, *, timeout: int = STOP_TIMEOUT_S) -> Stopped:
    """Stop and remove what ``start_instance`` started (foreground Ctrl-C, failed start)."""
    handle = started.handle
    try:
        if isinstance(handle, local_runtime.LocalHandle):
            return local_runtime.stop(handle, timeout)
        assert isinstance(handle, docker_runtime.ContainerHandle)
        return docker_runtime.stop(handle.container, timeout)
    finally:
        started.close()


@dataclass
class StopAll:
    """What ``stop --all`` did: every instance is tried, whatever happened to the others."""

    stopped: list[Stopped] = field(default_factory=list)
    failed: list[tuple[str, NimctlError]] = field(default_factory=list)
    note: str | None = None  # why containers were not stopped (Docker could not be asked)

    def attempt(self, name: str, action: Callable[[], Stopped]) -> None:
        try:
            self.stopped.append(action())
        except NimctlError as exc:
            self.failed.append((name, exc))


def stop_all(*, timeout: int = STOP_TIMEOUT_S) -> StopAll:
    result = StopAll()
    for handle in local_runtime.list_handles():
        result.attempt(handle.name, lambda handle=handle: local_runtime.stop(handle, timeout))
    try:
        client = connect(timeout=DOCKER_TIMEOUT_S)
    except RuntimeUnavailableError as exc:
        result.note = f"containers not stopped: {exc.message}"
        return result
    try:
        with translated("listing containers"):
            containers = docker_runtime.list_containers(client, all_states=True)
        for container in containers:
            result.attempt(container.name, lambda c=container: docker_runtime.stop(c, timeout))
    except NimctlError as exc:
        result.note = f"containers not stopped: {exc.message}"
    finally:
        client.close()
    result.stopped.sort(key=lambda stopped: stopped.instance.name)
    return result
