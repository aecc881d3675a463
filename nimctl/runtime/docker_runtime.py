"""Instances as Docker containers: start, find, list, logs, stop, all through the Docker SDK.

:class:`DockerRuntime` is this runtime behind :class:`nimctl.runtime.base.InstanceRuntime`; the
functions below it act on one connection and one container. What the container is (GPUs,
mounts, environment, ...) comes from its description (:mod:`nimctl.runtime.container`), which
``--dry-run`` prints as a ``docker run`` line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from nimctl import contract
from nimctl.contract import MANAGED_LABEL
from nimctl.errors import RuntimeFailure, RuntimeUnavailableError
from nimctl.runtime import docker_client
from nimctl.runtime.base import Handle, InstanceRuntime, NotOursError
from nimctl.runtime.container import create_arguments, describe_container
from nimctl.runtime.docker_client import running_container_urls, translated
from nimctl.runtime.dry_run import docker_network_line, docker_run_line
from nimctl.runtime.group import docker_members, network_name
from nimctl.runtime.instances import (
    STOP_TIMEOUT_S,
    Instance,
    Stopped,
    lines_of,
    name_in_use_error,
    parse_seconds,
    parse_time,
)
from nimctl.runtime.placement import ContainerPlacement
from nimctl.runtime.ports import check_port_free, port_in_use_error
from nimctl.runtime.spec import RunSpec

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from nimctl.runtime.images import BuildListener

# What the daemon answers when GPUs are asked for and no NVIDIA runtime can give them:
# device requests with no driver for them, or a runtime name it does not know.
_NO_GPU_RUNTIME = ("could not select device driver", "unknown or invalid runtime name")
# How long a lookup (find, list, stop --all) gives the daemon, and the name check made for a
# host process (which should not wait long on a Docker it may not even use).
LOOKUP_TIMEOUT_S = 10.0
NAME_CHECK_TIMEOUT_S = 5.0

Connect = Callable[..., "DockerClient"]  # docker_client.connect(timeout=...)


class ContainerHandle:
    """A container, started or found: for the readiness wait, the log follow, logs and stop.

    ``client`` is the connection it talks through when the handle owns it (:meth:`close`).
    """

    def __init__(self, container: Container, url: str, client: DockerClient | None = None) -> None:
        self.container = container
        self.name = container.name
        self.url = url
        self.client = client
        self.rank = _int_label(container.labels.get(contract.NODE_RANK_LABEL), 0)

    def state(self) -> tuple[str, int | None]:
        from docker.errors import NotFound

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

        with translated("reading its log", self.name):
            try:
                raw = self.container.logs(tail=count)
            except NotFound:
                return []
        return raw.decode("utf-8", "replace").splitlines()[-count:]

    def follow(self) -> Iterator[str]:
        import time

        with translated("following its log", self.name):
            yield from lines_of(self.container.logs(stream=True, follow=True, since=int(time.time())))

    def to_instance(self) -> Instance:
        return container_instance(self.container)

    def close(self) -> None:
        """Let go of the Docker connection (the container itself is left as it is)."""
        if self.client is not None:
            self.client.close()
            self.client = None


class DockerRuntime(InstanceRuntime[ContainerHandle]):
    """Containers, through a connection ``connect(timeout=...)`` opens for each operation.

    ``connect`` and ``may_answer`` say how to reach the daemon; ``timeout`` is how long a lookup
    gives it; ``answers`` is what asking it found already (None: not asked), so that it is not
    asked twice.
    """

    kind = "docker"
    placement = ContainerPlacement()  # nimctl's paths and port built in; host folders as mounts
    noun = "container"
    plural = "containers"
    title = "Docker"

    def __init__(
        self,
        *,
        connect: Connect = docker_client.connect,
        may_answer: Callable[[], bool] = docker_client.may_answer,
        timeout: float = LOOKUP_TIMEOUT_S,
        answers: bool | None = None,
        summaries: Callable[..., list[dict[str, Any]] | None] | None = None,
    ) -> None:
        self._connect = connect
        self._may_answer = may_answer
        # docker_client.container_summaries (or a test's stand-in): the SDK-free listing.
        self._summaries = summaries
        self._timeout = timeout
        self._answers = answers

    def start(
        self,
        spec: RunSpec,
        *,
        others: Sequence[InstanceRuntime[Handle]],
        on_build: BuildListener | None = None,
    ) -> ContainerHandle:
        """Ensure the image and start the container; the handle holds the connection until closed."""
        # Here, not at the top: every client command imports the runtime for its default target.
        from nimctl.runtime.images import ensure_image

        assert spec.image is not None
        client = self._connect()
        try:
            # Name and port before the build, which can take minutes.
            _refuse_name(client, spec.name)
            for other in others:
                other.check_name(spec.name)
            if spec.publish:
                check_port_free(spec.host, spec.port)
            ensure_image(client, spec.image, device=spec.device, on_event=on_build)
            for other in others:
                other.forget_ended(spec.name)
            handle = start(client, spec)  # the module's start(): create and start the container
        except BaseException:
            client.close()
            raise
        handle.client = client
        return handle

    def check_name(self, name: str) -> None:
        if self._answers is False or not self._may_answer():
            return
        try:
            client = self._connect(timeout=NAME_CHECK_TIMEOUT_S)
        except RuntimeUnavailableError:
            return  # no daemon: no container can hold the name
        try:
            _refuse_name(client, name)
        finally:
            client.close()

    def find(self, name: str) -> ContainerHandle | None:
        client = self._connect(timeout=self._timeout)
        try:
            with translated("looking it up", name):
                container = find_container(client, name)
            if container is not None and managed(container) is None:
                raise NotOursError(
                    f"container {name} was not started by nimctl (no {MANAGED_LABEL} label)",
                    hint="manage it with docker itself",
                )
        except BaseException:
            client.close()
            raise
        if container is None:
            client.close()
            return None
        return ContainerHandle(container, container.labels.get(contract.URL_LABEL, ""), client)

    def list(self, *, all_states: bool) -> list[Instance]:
        # No container of nimctl's (the common case of `ps` on a machine running host processes):
        # said over the socket in a few ms, without the SDK's import (about 60 ms of `ps`).
        quick = self._summaries is not None and self._may_answer()
        if quick and self._summaries(self._timeout, all_states=True) == []:  # type: ignore[misc]
            return []
        client = self._connect(timeout=self._timeout)
        try:
            with translated("listing containers"):
                return list_instances(client, all_states=all_states)
        finally:
            client.close()

    def running_urls(self, limit: int) -> list[str]:
        """Over the daemon's Unix socket without the SDK when it is there; a slow or absent
        daemon is an empty answer."""
        if not self._may_answer():
            return []
        quick = running_container_urls(self._timeout)
        if quick is not None:
            return quick[:limit]
        from docker.errors import DockerException

        try:
            client = self._connect(timeout=self._timeout)
        except RuntimeUnavailableError:
            return []
        try:
            containers = list_instances(client, all_states=False)
        except (DockerException, OSError):  # a slow daemon (requests' timeouts are OSErrors)
            containers = []
        finally:
            client.close()
        return [instance.url for instance in containers if instance.url][:limit]

    @contextlib.contextmanager
    def all_handles(self) -> Iterator[list[ContainerHandle]]:
        client = self._connect(timeout=self._timeout)
        try:
            with translated("listing containers"):
                containers = list_containers(client, all_states=True)
            yield [ContainerHandle(c, c.labels.get(contract.URL_LABEL, "")) for c in containers]
        finally:
            client.close()

    def logs(self, handle: ContainerHandle, *, follow: bool, tail: int | None) -> Iterator[str]:
        with translated("reading its log", handle.name):
            yield from container_logs(handle.container, follow=follow, tail=tail)

    def stop(self, handle: ContainerHandle, timeout: float = STOP_TIMEOUT_S) -> Stopped:
        return stop_container(handle.container, timeout)

    def command_line(self, spec: RunSpec, *, detach: bool) -> str:
        if spec.nodes == 1:
            return docker_run_line(spec, detach=detach)
        network = docker_network_line(spec.name)
        return "\n".join([network, *(docker_run_line(m, detach=detach) for m in self.members(spec))])

    def members(self, spec: RunSpec) -> list[RunSpec]:
        return docker_members(spec)

    def find_group(self, group: str) -> list[ContainerHandle]:
        client = self._connect(timeout=self._timeout)
        try:
            with translated("looking up its members", group):
                containers = group_containers(client, group)
        except BaseException:
            client.close()
            raise
        if not containers:
            client.close()
            return []
        # The first handle owns the connection: closing every handle lets it go.
        handles = [ContainerHandle(c, c.labels.get(contract.URL_LABEL, "")) for c in containers]
        handles[0].client = client
        return handles

    def remove_group(self, group: str) -> None:
        client = self._connect(timeout=self._timeout)
        try:
            with translated("removing its network", group):
                remove_network(client, group)
        finally:
            client.close()

    def what_runs(self, spec: RunSpec) -> str:
        return f"image {spec.image}"


def _refuse_name(client: DockerClient, name: str) -> None:
    """Any container holding the name refuses it, ended or not (Docker's own rule)."""
    with translated("checking the name", name):
        container = find_container(client, name)
    if container is not None:
        raise name_in_use_error(name, holder(container))


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

    The name and the port were checked before the image build (:meth:`DockerRuntime.start`);
    the port is checked again because a build can take minutes, and the daemon's own
    conflicts are mapped to the same errors.
    """
    from docker.errors import APIError

    if spec.publish:
        check_port_free(spec.host, spec.port)
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    if spec.network is not None and spec.group is not None:
        ensure_network(client, spec.network, spec.group)
    try:
        container = client.containers.create(**create_arguments(describe_container(spec)))
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
    return [container_instance(c) for c in list_containers(client, all_states=all_states)]


def container_instance(container: Container) -> Instance:
    """The container as ``ps`` shows it, from its labels and the state last read."""
    labels = container.labels
    state = container.attrs.get("State", {})
    status = str(state.get("Status", container.status))
    group = labels.get(contract.GROUP_LABEL)
    return Instance(
        name=container.name,
        runtime="docker",
        model=labels.get(contract.MODEL_LABEL, "?"),
        profile_id=labels.get(contract.PROFILE_LABEL),
        profile_name=labels.get(contract.PROFILE_NAME_LABEL),
        state=status,
        exit_code=state.get("ExitCode") if status in {"exited", "dead"} else None,
        url=labels.get(contract.URL_LABEL, ""),
        source=labels.get(contract.SOURCE_LABEL),
        cache=labels.get(contract.CACHE_LABEL),
        lora_dir=labels.get(contract.LORA_DIR_LABEL),
        lora_refresh=parse_seconds(labels.get(contract.LORA_REFRESH_LABEL)),
        idle_stop=parse_seconds(labels.get(contract.IDLE_STOP_LABEL)),
        started_at=parse_time(state.get("StartedAt")),
        ident=container.short_id,
        group=group,
        rank=_int_label(labels.get(contract.NODE_RANK_LABEL), 0),
        nodes=_int_label(labels.get(contract.NODES_LABEL), 1),
        address=_address(container, group),
    )


def _int_label(text: str | None, default: int) -> int:
    try:
        return int(text or default)
    except ValueError:  # a hand-edited label
        return default


def _address(container: Container, group: str | None) -> str:
    """A group member's IP on the group's network while it has one, else its name (Docker's DNS)."""
    if group is None:
        return ""
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    return str((networks.get(network_name(group)) or {}).get("IPAddress") or container.name)


def group_containers(client: DockerClient, group: str) -> list[Container]:
    """The group's members, ended ones too, the leader first."""
    filters = {"label": [f"{MANAGED_LABEL}=true", f"{contract.GROUP_LABEL}={group}"]}
    containers = client.containers.list(all=True, filters=filters, ignore_removed=True)
    return sorted(containers, key=lambda c: _int_label(c.labels.get(contract.NODE_RANK_LABEL), 0))


def ensure_network(client: DockerClient, name: str, group: str) -> None:
    """The group's user-defined bridge: each member its own network namespace and address, and
    the members reach each other by container name. One left by an earlier group is reused."""
    from docker.errors import APIError, NotFound

    try:
        client.networks.get(name)
        return
    except NotFound:
        pass
    labels = {MANAGED_LABEL: "true", contract.GROUP_LABEL: group}
    try:
        client.networks.create(name, driver="bridge", labels=labels)
    except APIError as exc:
        raise RuntimeFailure(f"could not create the network {name}: {exc.explanation or exc}") from None


def remove_network(client: DockerClient, group: str) -> None:
    """The group's network, if nimctl made it; one a container still uses is left (and said)."""
    from docker.errors import APIError, NotFound

    try:
        network = client.networks.get(network_name(group))
    except NotFound:
        return
    if (network.attrs.get("Labels") or {}).get(MANAGED_LABEL) != "true":
        return
    try:
        network.remove()
    except NotFound:
        return
    except APIError as exc:
        what = exc.explanation or exc
        raise RuntimeFailure(f"could not remove the network {network.name}: {what}") from None


def managed(container: Container | None) -> Container | None:
    """The container if nimctl started it (its label says so), else None."""
    if container is not None and container.labels.get(MANAGED_LABEL) == "true":
        return container
    return None


def container_logs(container: Container, *, follow: bool, tail: int | None) -> Iterator[str]:
    count = tail if tail is not None else "all"
    if follow:
        return lines_of(container.logs(stream=True, follow=True, tail=count))
    return lines_of([container.logs(tail=count)])


def stop_container(container: Container, timeout: float = STOP_TIMEOUT_S) -> Stopped:
    """SIGTERM, up to ``timeout`` seconds, then SIGKILL; then remove.

    A container removed meanwhile by someone else is reported with the state ``gone``.
    """
    from docker.errors import NotFound

    was_running = gone = False
    with translated(f"stopping {container.name}", container.name):
        try:
            container.reload()
            was_running = container.status in {"running", "restarting", "paused"}
            if was_running:
                container.stop(timeout=int(timeout))  # the daemon takes whole seconds
            container.reload()
        except NotFound:
            gone = not was_running
        final = container_instance(container)
        with contextlib.suppress(NotFound):
            container.remove(force=True)
    if gone:
        final.state, final.exit_code = "gone", None
    return Stopped(final, was_running)
