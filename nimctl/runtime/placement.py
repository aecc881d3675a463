"""Where each runtime puts the server's model, paths, GPUs and image: its half of the run spec.

:func:`nimctl.runtime.planning.plan_run` decides what to run the same way for every runtime and
asks the runtime's :class:`Placement` how to give it to the server: a container has nimctl's
paths and port built in (``nimctl.contract``) and gets host folders as mounts; a host process is
told its folders, port and address through the server's variables, and its GPUs through
``CUDA_VISIBLE_DEVICES``. Each runtime class names its placement (``DockerRuntime.placement``,
``LocalRuntime.placement``); this module has no runtime code, so the planner and the runtimes
both import it without a circle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from nimctl import contract
from nimctl.errors import UsageError
from nimctl.runtime.spec import Mount, ResolvedModel, Runtime

if TYPE_CHECKING:
    from nimctl.gpu import Inventory
    from nimctl.runtime.gpu_request import GpuRequest


class Placement(ABC):
    runtime: Runtime

    @abstractmethod
    def check(self, *, image: str | None, restart: str, note: str | None) -> None:
        """Refuse the options this runtime cannot honour (``note``: why ``auto`` chose it)."""

    @abstractmethod
    def server_env(
        self, resolved: ResolvedModel, model: str, port: int, host: str, cache: Path
    ) -> dict[str, str]:
        """The variables this runtime sets for the server, before the user's and the profile's."""

    @abstractmethod
    def mounts(self, resolved: ResolvedModel) -> list[Mount]:
        """Host paths the server needs, as mounts (a host process reads them where they are)."""

    @abstractmethod
    def folder(self, path: Path, container_path: str, mounts: list[Mount]) -> str:
        """Where the server finds the host folder ``path``; a container's is mounted at ``container_path``."""

    @abstractmethod
    def gpus(self, request: GpuRequest, visible: Inventory) -> tuple[GpuRequest, str | None]:
        """The GPU request the runtime records, and ``CUDA_VISIBLE_DEVICES`` for the server (None: unset)."""

    @abstractmethod
    def image(self, image: str | None, device: str) -> str | None:
        """The image to run (None: no image)."""


class ContainerPlacement(Placement):
    runtime: Runtime = "docker"

    def check(self, *, image: str | None, restart: str, note: str | None) -> None:
        return None  # every option applies to a container

    def server_env(
        self, resolved: ResolvedModel, model: str, port: int, host: str, cache: Path
    ) -> dict[str, str]:
        env = {contract.MODEL_PATH: resolved.container_model_path}
        if resolved.profiles_dir:
            env[contract.PROFILES_DIR] = resolved.profiles_dir
        return env

    def mounts(self, resolved: ResolvedModel) -> list[Mount]:
        return list(resolved.mounts)

    def folder(self, path: Path, container_path: str, mounts: list[Mount]) -> str:
        mounts.append(Mount(path.resolve(), container_path))
        return container_path

    def gpus(self, request: GpuRequest, visible: Inventory) -> tuple[GpuRequest, str | None]:
        return request.by_uuid(visible), None

    def image(self, image: str | None, device: str) -> str | None:
        from nimctl.runtime.images import default_image

        return image or default_image(device)  # type: ignore[arg-type]


class HostPlacement(Placement):
    runtime: Runtime = "local"

    def check(self, *, image: str | None, restart: str, note: str | None) -> None:
        if image:
            raise UsageError(
                "--image needs the Docker runtime, and this run would be a host process"
                + (f"; {note}" if note else ""),
                hint="a host process runs this nimctl's own nim-serve: leave --image out, or use Docker",
            )
        if restart.partition(":")[0] != "no":
            hint = "leave --restart out with --runtime local"
            raise UsageError("--restart needs the Docker runtime", hint=hint)

    def server_env(
        self, resolved: ResolvedModel, model: str, port: int, host: str, cache: Path
    ) -> dict[str, str]:
        env = {
            contract.MODEL_PATH: resolved.model_path,
            contract.SERVER_PORT: str(port),
            contract.SERVER_HOST: host,
            contract.CACHE_PATH: str(cache),
        }
        if resolved.manifest is not None and Path(model).expanduser().is_file():
            env[contract.PROFILES_DIR] = str(Path(model).expanduser().resolve().parent)
        return env

    def mounts(self, resolved: ResolvedModel) -> list[Mount]:
        return []

    def folder(self, path: Path, container_path: str, mounts: list[Mount]) -> str:
        return str(path.resolve())

    def gpus(self, request: GpuRequest, visible: Inventory) -> tuple[GpuRequest, str | None]:
        # What --gpus gives a container, for a host process: the engine sees only these GPUs.
        return request, request.cuda_visible_devices(visible)

    def image(self, image: str | None, device: str) -> str | None:
        return None


# The planner's lookup; each runtime class holds the same kind as its ``placement``
# (tests/runtime/test_spec.py checks they agree).
PLACEMENTS: dict[Runtime, Placement] = {"docker": ContainerPlacement(), "local": HostPlacement()}
