"""The operations behind ``run``, ``ps``, ``logs`` and ``stop``, across both runtimes.

Each runtime is an :class:`~nimctl.runtime.base.InstanceRuntime` (Docker containers, host
processes); this module works only through that interface. What it decides itself concerns
several runtimes at once: which one ``auto`` means, that a name is one instance across all of
them, and which instance a name means when two runtimes hold it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from nimctl.errors import NimctlError, RuntimeUnavailableError, UsageError
from nimctl.runtime.base import Handle, InstanceRuntime, NotOursError
from nimctl.runtime.docker_client import (
    PERMISSION_HINT,
    DockerPermissionError,
    connect,
    container_summaries,
    daemon_address,
    may_answer,
    probe_daemon,
)
from nimctl.runtime.docker_runtime import LOOKUP_TIMEOUT_S, DockerRuntime
from nimctl.runtime.group import GroupHandle, fold, member_name
from nimctl.runtime.instances import STOP_TIMEOUT_S, Instance, Stopped, fill_readiness
from nimctl.runtime.local_runtime import LocalRuntime
from nimctl.runtime.spec import RunSpec, Runtime

if TYPE_CHECKING:
    from nimctl.runtime.images import BuildListener
    from nimctl.runtime.readiness import ReadinessListener

RuntimeChoice = Literal["auto", "docker", "local"]
# The client's default target is looked up before every client command: Docker gets this long.
QUICK_DOCKER_TIMEOUT_S = 1.0


class Choice(NamedTuple):
    runtime: Runtime
    note: str | None  # why ``auto`` chose it
    docker_answers: bool | None  # what asking the daemon found; None: not asked


def choose_runtime(requested: RuntimeChoice) -> Choice:
    """The runtime to use, and a line saying why when ``auto`` chose it."""
    if requested != "auto":
        return Choice(requested, None, None)
    problem = probe_daemon()
    if problem is None:
        return Choice("docker", "runtime: Docker (its daemon answers)", True)
    if isinstance(problem, DockerPermissionError):
        # A daemon is there, but this user may not use it: say so rather than "no daemon".
        why = f"Docker's socket {daemon_address()} refused permission; to use Docker: {PERMISSION_HINT}"
    else:
        why = "no Docker daemon answers; --runtime docker to insist"
    return Choice("local", f"runtime: local process ({why})", False)


def runtimes(
    *, docker_answers: bool | None = None, docker_timeout: float = LOOKUP_TIMEOUT_S
) -> list[InstanceRuntime[Any]]:
    """Every runtime, the local one first: reading its files costs nothing, asking Docker may.

    Docker is reached through this module's ``connect``, ``may_answer`` and
    ``container_summaries``, the one place the daemon is named (a test stands in for it there);
    ``docker_answers`` is what
    :func:`choose_runtime` found, so that the daemon is not asked twice.
    """
    docker = DockerRuntime(
        connect=connect,
        may_answer=may_answer,
        timeout=docker_timeout,
        answers=docker_answers,
        summaries=container_summaries,
    )
    return [LocalRuntime(), docker]


def runtime_for(kind: Runtime, among: Iterable[InstanceRuntime[Any]] | None = None) -> InstanceRuntime[Any]:
    return next(runtime for runtime in (among or runtimes()) if runtime.kind == kind)


def dry_run_line(spec: RunSpec, *, detach: bool) -> str:
    """What ``--dry-run`` prints: the command equivalent to starting ``spec``, secrets masked."""
    return runtime_for(spec.runtime).command_line(spec, detach=detach)


@dataclass
class Started:
    """A started instance: its handle (for logs and stop), its runtime and how long readiness took."""

    spec: RunSpec
    handle: Handle
    runtime: InstanceRuntime[Any]
    ready_after: float | None = None

    @property
    def what_runs(self) -> str:
        """The image, or a host process: for the line saying it started (a group: its members)."""
        what = self.runtime.what_runs(self.spec)
        if self.spec.nodes > 1:
            names = ", ".join(member_name(self.spec.name, rank) for rank in range(self.spec.nodes))
            what += f"; {self.spec.nodes} nodes: {names}"
        return what

    def close(self) -> None:
        """Let go of what reaching the instance holds (its Docker connection); it keeps running."""
        self.handle.close()


def start_instance(
    spec: RunSpec,
    *,
    on_build: BuildListener | None = None,
    docker_answers: bool | None = None,
) -> Started:
    """Start the instance in its runtime (Docker ensures the image first); does not wait for it.

    ``docker_answers`` is what :func:`choose_runtime` already found, so the daemon is not
    asked twice. The caller closes what it gets (:meth:`Started.close`, or :func:`stop_handle`).
    """
    every = runtimes(docker_answers=docker_answers)
    chosen = runtime_for(spec.runtime, every)
    # The name is one instance across runtimes: the others are asked to let it go.
    others = [runtime for runtime in every if runtime is not chosen]
    # A group (--nodes N) is started member by member; its leader holds the credentials.
    start = chosen.start_group if spec.nodes > 1 else chosen.start
    if spec.security is None:
        return Started(spec, start(spec, others=others, on_build=on_build), chosen)
    from nimctl.runtime import credentials

    # Written only once no instance holds the name: a running one's key must not be replaced.
    for runtime in every:
        runtime.check_name(spec.name)
    credentials.create(spec.name, spec.url, spec.security)
    try:
        return Started(spec, start(spec, others=others, on_build=on_build), chosen)
    except BaseException:
        credentials.remove(spec.name)
        raise


def wait_for(started: Started, *, timeout: float, on_event: ReadinessListener | None = None) -> float:
    started.ready_after = started.runtime.wait(started.handle, timeout=timeout, on_event=on_event)
    return started.ready_after


def list_instances(*, all_states: bool = False, readiness: bool = True) -> tuple[list[Instance], str | None]:
    """Instances of every runtime, and a note when one could not be asked."""
    instances: list[Instance] = []
    notes: list[str] = []
    for runtime in runtimes():
        try:
            # Ended ones too: a group's row shows its ended members while its leader runs.
            instances += fold(runtime.list(all_states=True))
        except NimctlError as exc:
            notes.append(f"{runtime.plural} not listed: {exc.message}")
    instances = [instance for instance in instances if all_states or instance.running]
    instances.sort(key=lambda i: i.name)
    return (fill_readiness(instances) if readiness else instances), "; ".join(notes) or None


def running_instance_urls(*, limit: int = 2) -> list[str]:
    """URLs of running instances, at most ``limit``: enough for the client's default target.

    Local instances are read first (files only); Docker is asked only while fewer than
    ``limit`` are found and a daemon may answer, with a short timeout (over its Unix socket
    without the SDK), and any failure there leaves the local answer.
    """
    urls: list[str] = []
    for runtime in runtimes(docker_timeout=QUICK_DOCKER_TIMEOUT_S):
        if len(urls) >= limit:
            break
        urls += runtime.running_urls(limit - len(urls))
    return urls[:limit]


@dataclass
class Found:
    """An instance found by name, and its runtime; close it when done."""

    runtime: InstanceRuntime[Any]
    handle: Handle

    def close(self) -> None:
        self.handle.close()


def find_instance(name: str, *, member: bool = False) -> Found:
    """The instance called ``name`` (a group: all its members, as a
    :class:`~nimctl.runtime.group.GroupHandle`); close what it returns when done.

    A group's worker is refused by its name (stop or talk to the group by the group's name)
    unless ``member`` (``logs NAME-node1`` reads that member's log alone).
    """
    found = _find_one(name)
    try:
        return _as_group(found, name, member=member)
    except BaseException:
        found.close()
        raise


def _as_group(found: Found, name: str, *, member: bool) -> Found:
    instance = found.handle.to_instance()
    if instance.group is None or (member and instance.name != instance.group):
        return found
    if instance.is_worker:
        raise UsageError(
            f"{name} is node {instance.rank} of the multi-node group {instance.group}",
            hint=f"act on the whole group by its name: nimctl stop {instance.group}; "
            f"its log alone: nimctl logs {name}",
        )
    members = found.runtime.find_group(instance.group)
    found.close()
    return Found(found.runtime, GroupHandle(found.runtime, instance.group, members))


def _find_group_only(name: str) -> Found | None:
    """A group whose leader is gone: its workers, found by the group's name."""
    for runtime in runtimes():
        try:
            members = runtime.find_group(name)
        except NimctlError:
            continue
        if members:
            return Found(runtime, GroupHandle(runtime, name, members))
    return None


def _find_one(name: str) -> Found:
    """The instance called ``name``; close what it returns (its Docker connection) when done.

    A name can be in two runtimes: an ended local instance and a container (left by an older
    nimctl, or a race). The running one wins, else the one started last, so that ``stop`` and
    ``logs`` never act on an old record while a live instance of the name goes on. A running
    one ends the search, so Docker is not asked about a name a running local instance holds.
    """
    candidates: list[Found] = []
    asked: list[InstanceRuntime[Any]] = []
    unavailable: list[tuple[InstanceRuntime[Any], RuntimeUnavailableError]] = []
    not_ours: NotOursError | None = None
    try:
        for runtime in runtimes():
            try:
                handle = runtime.find(name)
            except RuntimeUnavailableError as exc:
                unavailable.append((runtime, exc))
                continue
            except NotOursError as exc:  # refuses the name only if no runtime has an instance of it
                not_ours = not_ours or exc
                continue
            asked.append(runtime)
            if handle is None:
                continue
            found = Found(runtime, handle)
            if handle.to_instance().running:
                _close(candidates)
                return found
            candidates.append(found)
    except BaseException:
        _close(candidates)
        raise
    if candidates:
        newest = _started_last(candidates)
        _close(found for found in candidates if found is not newest)
        return newest
    if not_ours is not None:
        raise not_ours
    if (group := _find_group_only(name)) is not None:
        return group
    if unavailable:
        runtime, exc = unavailable[0]
        nouns = " or ".join(asked_runtime.noun for asked_runtime in asked) or "instance"
        raise UsageError(
            f"no {nouns} named {name}, and {runtime.title} cannot be asked: {exc.message}", hint=exc.hint
        ) from None
    raise UsageError(f"no instance named {name}", hint="nimctl ps --all lists them")


def _started_last(candidates: list[Found]) -> Found:
    """Of ended instances, the one started last; a tie, or a start time not known, goes to the
    runtime asked later (a container over a local record without one)."""
    never = datetime.min.replace(tzinfo=UTC)

    def started_at(found: Found) -> datetime:
        return found.handle.to_instance().started_at or never

    newest = candidates[0]
    for found in candidates[1:]:
        if started_at(found) >= started_at(newest):
            newest = found
    return newest


def _close(found: Iterable[Found]) -> None:
    for each in found:
        each.close()


def instance_logs(name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
    """The instance's log, whole or its last ``tail`` lines, then following it when asked."""
    found = find_instance(name, member=True)
    try:
        if isinstance(found.handle, GroupHandle):  # every member, each line tagged [nodeR]
            yield from found.handle.logs(follow=follow, tail=tail)
        else:
            yield from found.runtime.logs(found.handle, follow=follow, tail=tail)
    finally:
        found.close()


def _stop(runtime: InstanceRuntime[Any], handle: Handle, timeout: float) -> Stopped:
    if isinstance(handle, GroupHandle):  # every member, then what the group shared
        return handle.stop(timeout)
    return runtime.stop(handle, timeout)


def stop_instance(name: str, *, timeout: int = STOP_TIMEOUT_S) -> Stopped:
    found = find_instance(name)
    try:
        stopped = _stop(found.runtime, found.handle, timeout)
    finally:
        found.close()
    # An ended record of the same name in another runtime goes too, so that it cannot shadow the name later.
    for runtime in runtimes():
        if runtime.kind != found.runtime.kind:
            runtime.forget_ended(name)
    _forget_credentials(name)
    return stopped


def _forget_credentials(name: str) -> None:
    """A stopped instance's key and certificates go with it."""
    from nimctl.runtime.credentials import remove

    remove(name)


def stop_handle(started: Started, *, timeout: int = STOP_TIMEOUT_S) -> Stopped:
    """Stop and remove what ``start_instance`` started (foreground Ctrl-C, failed start)."""
    try:
        return _stop(started.runtime, started.handle, timeout)
    finally:
        started.close()
        _forget_credentials(started.spec.name)


@dataclass
class StopAll:
    """What ``stop --all`` did: every instance is tried, whatever happened to the others."""

    stopped: list[Stopped] = field(default_factory=list)
    failed: list[tuple[str, NimctlError]] = field(default_factory=list)
    note: str | None = None  # why some were not stopped (Docker could not be asked)

    def attempt(self, name: str, action: Callable[[], Stopped]) -> None:
        try:
            self.stopped.append(action())
        except NimctlError as exc:
            self.failed.append((name, exc))


def stop_all(*, timeout: int = STOP_TIMEOUT_S) -> StopAll:
    result = StopAll()
    notes: list[str] = []
    for runtime in runtimes():
        try:
            with runtime.all_handles() as handles:
                for handle in handles:
                    result.attempt(handle.name, partial(runtime.stop, handle, timeout))
        except NimctlError as exc:  # asking for the list failed; each stop's own failure is in result
            notes.append(f"{runtime.plural} not stopped: {exc.message}")
            continue
        for group in sorted({s.instance.group for s in result.stopped if s.instance.runtime == runtime.kind}):
            if group is not None:
                try:
                    runtime.remove_group(group)
                except NimctlError as exc:
                    result.failed.append((group, exc))
    result.note = "; ".join(notes) or None
    result.stopped.sort(key=lambda stopped: stopped.instance.name)
    for stopped in result.stopped:
        _forget_credentials(stopped.instance.name)
    return result
