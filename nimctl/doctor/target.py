"""What ``nimctl run`` would run here: the same plan (:func:`nimctl.runtime.planning.plan_run`),
made with nothing started, for the checks to judge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nimctl import contract
from nimctl.errors import NimctlError, ProfileError

if TYPE_CHECKING:
    from nimctl.doctor.probes import DaemonState, Probes
    from nimctl.gpu import Inventory
    from nimctl.profiles import Manifest
    from nimctl.runtime.spec import RunSpec
    from nimctl.store.source import ModelSource

RuntimeChoice = Literal["auto", "docker", "local"]


@dataclass(frozen=True)
class Request:
    """``nimctl doctor``'s arguments: those of ``nimctl run`` that change what it needs."""

    model: str | None = None
    profile: str | None = None
    gpus: str | None = None  # run's --gpus: devices of this machine (all, none, 2, 0,1)
    assume_gpus: str | None = None  # --assume-gpus: judge profiles on hardware that is not here
    prefer: str | None = None
    max_model_len: int | None = None
    runtime: RuntimeChoice = "auto"
    port: int = contract.CONTAINER_PORT
    host: str = "127.0.0.1"
    cache: Path | None = None
    env: tuple[str, ...] = ()  # run's -e KEY=VALUE: they can pin a profile, go offline, pass HF_TOKEN
    image: str | None = None
    offline: bool = False


@dataclass
class Target:
    """The plan: ``spec`` is what run would start, None when it could not be made (``problem``
    says why: no runnable profile) or when no model was named (the machine only)."""

    request: Request
    runtime: Literal["docker", "local"]
    runtime_note: str | None
    machine: Inventory  # the GPUs NVML reads here: the driver checks are about these
    inventory: Inventory  # what profiles are judged on: --assume-gpus, else the machine's
    cache: Path
    spec: RunSpec | None = None
    problem: NimctlError | None = None
    manifest: Manifest | None = None
    source: ModelSource | None = None

    @property
    def offline(self) -> bool:
        """Whether the server will never download: --offline, or -e NIM_DISABLE_MODEL_DOWNLOAD=1."""
        from nimctl.runtime.planning import is_offline

        return self.request.offline or (self.spec is not None and is_offline(self.spec.env))

    @property
    def device(self) -> Literal["cpu", "cuda"] | None:
        """What the run needs: the plan's device; the machine's without a model; None unknown."""
        if self.spec is not None:
            return self.spec.device
        if self.request.model is None:
            return self.machine.device
        return None

    @property
    def image(self) -> str | None:
        from nimctl.runtime.images import default_image

        if self.runtime != "docker":
            return None
        if self.spec is not None:
            return self.spec.image
        device = self.device
        return self.request.image or (default_image(device) if device else None)


def choose_runtime(request: Request, daemon: DaemonState) -> tuple[Literal["docker", "local"], str | None]:
    """As ``nimctl run`` chooses (:func:`nimctl.runtime.manage.choose_runtime`), from the daemon
    already asked: ``auto`` is Docker when it answers, else a host process."""
    if request.runtime != "auto":
        return request.runtime, None
    if daemon.answers:
        return "docker", "Docker (its daemon answers)"
    return "local", "a host process (no Docker daemon this user can use)"


def plan(request: Request, probes: Probes, daemon: DaemonState) -> Target:
    """The target; a bad argument is the UsageError run would give (exit 2), a profile that cannot
    run is kept as ``problem`` for the profile check to report."""
    from nimctl.gpu import parse_gpu_spec

    runtime, note = choose_runtime(request, daemon)
    machine = probes.machine()
    assumed = request.assume_gpus or probes.environ.get("NIMCTL_ASSUME_GPUS") or None
    inventory = parse_gpu_spec(assumed) if assumed else machine
    cache = (request.cache or contract.host_cache_dir()).expanduser().resolve()
    target = Target(request, runtime, note, machine, inventory, cache)
    if request.model is None:
        return target
    from nimctl.runtime.planning import plan_run
    from nimctl.store.target import resolve_source

    target.manifest, target.source = resolve_source(request.model)
    try:
        target.spec = plan_run(
            model=request.model,
            runtime=runtime,
            profile=request.profile,
            gpus=request.gpus,
            prefer=request.prefer,
            port=request.port,
            host=request.host,
            cache_dir=cache,
            env_pairs=list(request.env),
            image=request.image,
            inventory=inventory,
            runtime_note=note,
            max_model_len=request.max_model_len,
            offline=request.offline,
        )
    except ProfileError as exc:
        target.problem = exc
    return target
