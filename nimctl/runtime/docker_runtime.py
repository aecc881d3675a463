"""Instances as Docker containers: start, list, logs, stop, all through the Docker SDK."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nimctl import contract
from nimctl.contract import MANAGED_LABEL
from nimctl.errors import RuntimeFailure, RuntimeUnavailableError
from nimctl.runtime.instances import (
    STOP_TIMEOUT_S,
    Instance,
    Stopped,
    lines_of,
    name_in_use_error,
    parse_time,
)
from nimctl.runtime.ports import check_port_free, port_in_use_error
from nimctl.runtime.spec import RunSpec

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

# What the daemon answers when GPUs are asked for and no NVIDIA runtime can give them:
# device requests with no driver for them, or a runtime name it does not know.
_NO_GPU_RUNTIME = ("could not select device driver", "unknown or invalid runtime name")


class ContainerHandle:
    """A started container, for the readiness wait and the foreground log follow."""

    def __init__(self, container: Container, url: str) -> None:
        self.container = container
        self.name = container.name
        self.url = url

    def state(self) -> tuple[str, int | None]:
        from docker.errors import NotFound

        from nimctl.runtime.docker_client import translated

        with translated("watching it", self.name):
            try:
                self.container.reload()
            except NotFound:
                return "removed", None
        state = self.container.attrs.get("State", {})
        status = str(state.get("Status", "unknown"))
        return status, (state.get("ExitCode") if status in {"exited", "dead"} else None)

    def last_lines(self, count: int) -> list[str]:
        from docker.errors import NotFound

        from nimctl.runtime.docker_client import translated

        with translated("reading its log", self.name):
            try:
                raw = self.container.logs(tail=count)
            except NotFound:
                return []
        return raw.decode("utf-8", "replace").splitlines()[-count:]

    def follow(self) -> Iterator[str]:
        import time

        from nimctl.runtime.docker_client import translated

        with translated("following its log", self.name):
            yield from lines_of(self.container.logs(stream=True, follow=True, since=int(time.time())))


def find_container(client: DockerClient, name: str) -> Container | None:
    from docker.errors import NotFound

    try:
        container = client.containers.get(name)
    except NotFound:
        return None
    return container


def holder(container: Container) -> str:
    """How a container holding a name is described in the "name in use" error."""
    return f"container {container.short_id} ({container.status})"


def start(client: DockerClient, spec: RunSpec) -> ContainerHandle:
    """Create and start the container; every failure removes what was created.

    The name and the port were checked before the image build (:mod:`nimctl.runtime.manage`);
    the port is checked again because a build can take minutes, and the daemon's own
    conflicts are mapped to the same errors.
    """
    from docker.errors import APIError
    from docker.types import DeviceRequest

    check_port_free(spec.host, spec.port)
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    volumes = {str(spec.cache_dir): {"bind": contract.CONTAINER_CACHE, "mode": "rw"}}
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
            ports={f"{contract.CONTAINER_PORT}/tcp": (spec.host, spec.port)},
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
    except BaseException:
        # Interrupted while the daemon may have created it already: it must not stay behind.
        _remove_created(client, spec.name)
        raise
    try:
        container.start()
    except BaseException as exc:  # Ctrl-C included: a created container must not stay behind
        with contextlib.suppress(APIError):
            container.remove(force=True)
        if isinstance(exc, APIError):
            raise _start_error(exc, spec) from None
        raise
    return ContainerHandle(container, spec.url)


def _remove_created(client: DockerClient, name: str) -> None:
    from docker.errors import DockerException

    with contextlib.suppress(DockerException, OSError):
        container = client.containers.get(name)
        if container.labels.get(MANAGED_LABEL) == "true" and container.status == "created":
            container.remove(force=True)


def _start_error(exc: Exception, spec: RunSpec) -> Exception:
    text = str(getattr(exc, "explanation", None) or exc)
    if "port is already allocated" in text or "address already in use" in text:
        return port_in_use_error(spec.host, spec.port)
    if spec.gpus.kind != "none" and any(marker in text for marker in _NO_GPU_RUNTIME):
        return RuntimeUnavailableError(
            "GPUs were asked for, but Docker has no NVIDIA container runtime",
            hint="install the NVIDIA Container Toolkit and restart Docker, or run with --gpus none",
        )
    if getattr(exc, "status_code", None) == 409 and "name" in text:  # created meanwhile by someone else
        return name_in_use_error(spec.name, "another container")
    return RuntimeFailure(f"could not start the container: {text.splitlines()[0]}")


def list_containers(client: DockerClient, *, all_states: bool) -> list[Container]:
    # ignore_removed: one removed between the listing and its inspection is simply not listed.
    filters = {"label": f"{MANAGED_LABEL}=true"}
    return client.containers.list(all=all_states, filters=filters, ignore_removed=True)


def list_instances(client: DockerClient, *, all_states: bool) -> list[Instance]:
    return [to_instance(container) for container in list_containers(client, all_states=all_states)]


def to_instance(container: Container) -> Instance:
    labels = container.labels
    state = container.attrs.get("State", {})
    status = str(state.get("Status", container.status))
    return Instance(
        name=container.name,
        runtime="docker",
        model=labels.get(contract.MODEL_LABEL, "?"),
        profile_id=labels.get(contract.PROFILE_LABEL),
        profile_name=labels.get(contract.PROFILE_NAME_LABEL),
        state=status,
        exit_code=state.get("ExitCode") if status in {"exited", "dead"} else None,
        url=labels.get(contract.URL_LABEL, ""),
        started_at=parse_time(state.get("StartedAt")),
        ident=container.short_id,
    )


def managed(container: Container | None) -> Container | None:
    """The container if nimctl started it (its label says so), else None."""
    if container is not None and container.labels.get(MANAGED_LABEL) == "true":
        return container
    return None


def logs(container: Container, *, follow: bool, tail: int | None) -> Iterator[str]:
    count = tail if tail is not None else "all"
    if follow:
        return lines_of(container.logs(stream=True, follow=True, tail=count))
    return lines_of([container.logs(tail=count)])


def stop(container: Container, timeout: int = STOP_TIMEOUT_S) -> Stopped:
    """SIGTERM, up to ``timeout`` seconds, then SIGKILL; then remove.

    A container removed meanwhile by someone else is reported with the state ``gone``.
    """
    from docker.errors import NotFound

    from nimctl.runtime.docker_client import translated

    was_running = gone = False
    with translated(f"stopping {container.name}", container.name):
        try:
            container.reload()
            was_running = container.status in {"running", "restarting", "paused"}
            if was_running:
                container.stop(timeout=timeout)
            container.reload()
        except NotFound:
            gone = not was_running
        final = to_instance(container)
        with contextlib.suppress(NotFound):
            container.remove(force=True)
    if gone:
        final.state, final.exit_code = "gone", None
    return Stopped(final, was_running)
