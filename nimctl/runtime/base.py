"""One interface for both runtimes: what :mod:`nimctl.runtime.manage` asks of Docker and of host processes.

A runtime starts an instance from a :class:`RunSpec`, finds one by name, lists its instances,
reads an instance's log, stops it and waits for it to be ready. What each one starts and how
(the container's description, the host process's environment and state folder) is its own
business; ``manage`` never asks which runtime it holds, and decides only what concerns several
(a name is one instance across both, the running or newest one wins a lookup).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

from nimctl.errors import NimctlError, UsageError
from nimctl.runtime.instances import Instance, Stopped, Watched
from nimctl.runtime.placement import Placement
from nimctl.runtime.spec import Runtime

if TYPE_CHECKING:
    from nimctl.runtime.group import GroupHandle
    from nimctl.runtime.images import BuildListener
    from nimctl.runtime.readiness import ReadinessListener
    from nimctl.runtime.spec import RunSpec


class NotOursError(UsageError):
    """The name is held, in one runtime, by something nimctl did not start (a foreign container)."""


class Handle(Watched, Protocol):
    """One instance, started or found: what ``logs``, ``stop`` and the readiness wait act on."""

    def to_instance(self) -> Instance:
        """The instance as ``ps`` shows it."""
        ...

    def close(self) -> None:
        """Let go of what reaching the instance holds (a Docker connection); the instance stays."""
        ...


H = TypeVar("H", bound=Handle)


class InstanceRuntime(ABC, Generic[H]):
    """Docker containers or host processes: what ``run``, ``ps``, ``logs`` and ``stop`` ask of them."""

    kind: ClassVar[Runtime]
    placement: ClassVar[Placement]  # how this runtime gives the server its model, paths and GPUs
    noun: ClassVar[str]  # one instance, in messages: "container", "local instance"
    plural: ClassVar[str]  # "containers", "local instances"
    title: ClassVar[str]  # the runtime itself, in messages: "Docker"

    @abstractmethod
    def start(
        self,
        spec: RunSpec,
        *,
        others: Sequence[InstanceRuntime[Handle]],
        on_build: BuildListener | None = None,
    ) -> H:
        """Start ``spec``'s instance, without waiting for it; ``others`` must let its name go too
        (:meth:`check_name` before anything slow, :meth:`forget_ended` once it is taken)."""

    @abstractmethod
    def check_name(self, name: str) -> None:
        """Refuse ``name`` (a UsageError) when this runtime holds it so that nothing else may take it."""

    def forget_ended(self, name: str) -> None:
        """Let another runtime's new instance have ``name``: drop an ended instance's record of it,
        so that ``logs`` and ``stop`` find only the new one. A running one is left as it is."""

    @abstractmethod
    def find(self, name: str) -> H | None:
        """The instance called ``name``, or None; RuntimeUnavailableError when this runtime cannot be
        asked, :class:`NotOursError` when something that is not nimctl's holds the name here."""

    @abstractmethod
    def list(self, *, all_states: bool) -> list[Instance]:
        """The running instances (with ``all_states``, the ended ones too)."""

    def running_urls(self, limit: int) -> list[str]:
        """URLs of running instances, at most ``limit``, for the client commands' default target:
        asked before every client command, so a runtime that can be slow or fail overrides this to
        answer quickly, and empty when it cannot."""
        listed = self.list(all_states=False)
        return [instance.url for instance in listed if instance.url and not instance.is_worker][:limit]

    @abstractmethod
    def all_handles(self) -> AbstractContextManager[list[H]]:
        """Every instance, ended ones too, to act on (``stop --all``) while the context lasts."""

    @abstractmethod
    def logs(self, handle: H, *, follow: bool, tail: int | None) -> Iterator[str]:
        """The log, whole or its last ``tail`` lines, then following it when asked."""

    @abstractmethod
    def stop(self, handle: H, timeout: float) -> Stopped:
        """SIGTERM, up to ``timeout`` seconds, then SIGKILL; then remove it."""

    @abstractmethod
    def command_line(self, spec: RunSpec, *, detach: bool) -> str:
        """The shell command equivalent to starting ``spec`` (``--dry-run``), secrets masked."""

    @abstractmethod
    def what_runs(self, spec: RunSpec) -> str:
        """What runs the instance (the image, a host process), for the line saying it started."""

    # --- Multi-node groups (nimctl.runtime.group) ---------------------------------------------

    def members(self, spec: RunSpec) -> list[RunSpec]:
        """Each member's spec of ``spec``'s group, the leader first (``[spec]`` for one node)."""
        return [spec]

    def find_group(self, group: str) -> list[H]:
        """Every member labelled with ``group``, ended ones too (close each when done)."""
        return []

    def remove_group(self, group: str) -> None:
        """Remove what the group shared (a Docker network) once its members are gone."""

    def start_group(
        self,
        spec: RunSpec,
        *,
        others: Sequence[InstanceRuntime[Handle]],
        on_build: BuildListener | None = None,
    ) -> GroupHandle:
        """Start every member, without waiting; a failure stops those started and removes the rest.

        Every member's name is checked in every runtime before anything starts (or is built).
        """
        from nimctl.runtime.group import GroupHandle

        members = self.members(spec)
        for member in members:
            self.check_name(member.name)
            for other in others:
                other.check_name(member.name)
        started: list[H] = []
        try:
            for member in members:  # the image is ensured (and said) once, for the first
                started.append(self.start(member, others=others, on_build=None if started else on_build))
        except BaseException:
            begun = GroupHandle(self, spec.name, started)
            try:
                with contextlib.suppress(NimctlError):  # the first failure is the one to tell
                    begun.stop(0)
            finally:
                begun.close()
            raise
        return GroupHandle(self, spec.name, started)

    def wait(self, handle: H, *, timeout: float, on_event: ReadinessListener | None = None) -> float:
        """Block until the instance is ready (live, then ready); the seconds it took."""
        from nimctl.runtime.readiness import wait_ready

        return wait_ready(handle, timeout=timeout, on_event=on_event)
