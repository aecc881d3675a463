"""What to run, decided on the host before anything starts: model, profile, GPUs, ports, environment.

:func:`plan_run` turns the ``nimctl run`` arguments into a :class:`RunSpec`; both runtimes
(Docker and a host process) start from it, and ``--dry-run`` prints it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nimctl import __version__
from nimctl.errors import UsageError

if TYPE_CHECKING:
    from nimctl.gpu import Inventory
    from nimctl.profiles import Manifest

Runtime = Literal["docker", "local"]
DEFAULT_MODEL = "tiny-vlm"
CONTAINER_PORT = 8000
CONTAINER_CACHE = "/opt/nim/.cache"
CONTAINER_PROFILES = "/opt/nim/profiles"
USER_PROFILES = "/opt/nim/user-profiles"
CONTAINER_MODEL = "/opt/nim/model"
LABEL = "ai.nimctl"
MANAGED_LABEL = f"{LABEL}.managed"
# Credentials passed through from the caller's environment when set (NIM's own names).
PASSTHROUGH_SECRETS = ("NGC_API_KEY", "HF_TOKEN")
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# An index, a GPU UUID or a MIG device UUID, in either case.
_GPU_ID = re.compile(r"[0-9]+|GPU-[0-9a-f-]+|MIG-[0-9a-f-/]+", re.IGNORECASE)
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


def is_secret(name: str) -> bool:
    return name in PASSTHROUGH_SECRETS or bool(_SECRET_NAME.search(name))


def url_host(host: str) -> str:
    """A host as it goes into a URL or ``-p HOST:PORT:PORT``: an IPv6 literal in brackets."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class GpuRequest:
    """``--gpus``: ``all``, ``none``, a count (``2``) or device ids (``0,1``, ``device=1``)."""

    kind: Literal["none", "all", "count", "ids"]
    count: int = 0
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GpuRequest:
        value = text.strip()
        keyword = value.lower()
        if keyword in {"none", "cpu", "0"}:
            return cls("none")
        if keyword == "all":
            return cls("all")
        if value.isdigit():
            return cls("count", count=int(value))
        # Only the keywords are case-blind: UUIDs are kept as typed (Docker passes them on as is).
        ids = value[len("device=") :] if keyword.startswith("device=") else value
        parts = tuple(part.strip() for part in ids.strip(",").split(",") if part.strip())
        if parts and all(_GPU_ID.fullmatch(part) for part in parts):
            return cls("ids", ids=parts)
        raise UsageError(
            f"bad --gpus value {text!r}",
            hint="use all, none, a count (2) or device ids (0,1 or device=1)",
        )

    def docker_flag(self) -> str | None:
        """The ``docker run --gpus`` value (None: no flag)."""
        if self.kind == "none":
            return None
        if self.kind == "all":
            return "all"
        if self.kind == "count":
            return str(self.count)
        return f'"device={",".join(self.ids)}"'

    def cuda_visible_devices(self, visible: Inventory) -> str | None:
        """``CUDA_VISIBLE_DEVICES`` for a host process, the GPUs a container would be given
        (``visible``: the part of the inventory this request selected); None leaves the caller's.

        UUIDs where NVML gave them: the value replaces the caller's, and CUDA reads an index
        in its own device order (fastest first, unless CUDA_DEVICE_ORDER=PCI_BUS_ID), which
        need not be NVML's, so an index could name another GPU.
        """
        if self.kind == "all":
            return None
        if self.kind == "none":
            return ""
        return ",".join(gpu.uuid or str(gpu.index) for gpu in visible.gpus)

    def by_uuid(self, visible: Inventory) -> GpuRequest:
        """The GPUs ``visible`` holds (this request's choice), named by UUID for Docker.

        Docker numbers GPUs as the host does, and ``all`` is every GPU of the host, while
        nimctl's indices, "the first N" and "all" follow the caller's CUDA_VISIBLE_DEVICES, so
        the container could get other GPUs than the profile was chosen for. Unchanged without
        UUIDs (an assumed inventory), for ``none``, and for ``all`` when nothing is hidden.
        """
        uuids = tuple(gpu.uuid for gpu in visible.gpus if gpu.uuid)
        if not uuids or len(uuids) != len(visible.gpus):
            return self
        if self.kind in {"ids", "count"} or (self.kind == "all" and visible.hidden):
            return GpuRequest("ids", ids=uuids)
        return self

    def visible(self, inventory: Inventory) -> Inventory:
        """The part of ``inventory`` the container will see, for profile selection."""
        from dataclasses import replace

        if self.kind == "all":
            return inventory
        if self.kind == "none":
            return replace(inventory, gpus=(), reason="--gpus none")
        if self.kind == "count":
            if self.count > len(inventory.gpus):
                raise UsageError(f"--gpus {self.count}: only {len(inventory.gpus)} GPU(s) visible")
            return replace(inventory, gpus=inventory.gpus[: self.count])
        migs = [part for part in self.ids if part.upper().startswith("MIG-")]
        if migs:
            # A slice's memory and compute are not in the inventory, so no profile could be checked.
            raise UsageError(
                f"--gpus {migs[0]}: a MIG instance; nimctl runs profiles on whole GPUs",
                hint="give the GPU's index or its GPU- UUID (nimctl gpus lists them)",
            )
        # NVML reports UUIDs upper-case ("GPU-3f..."); people copy them from anywhere.
        wanted = {part.lower() for part in self.ids}
        chosen = tuple(
            gpu for gpu in inventory.gpus if str(gpu.index) in wanted or (gpu.uuid or "").lower() in wanted
        )
        if len(chosen) != len(self.ids):
            known = ", ".join(str(gpu.index) for gpu in inventory.gpus) or "none"
            raise UsageError(f"--gpus {','.join(self.ids)}: no such GPU (visible: {known})")
        return replace(inventory, gpus=chosen)


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass
class RunSpec:
    """Everything a runtime needs to start one instance, and what ``--dry-run`` shows."""

    name: str
    runtime: Runtime
    model: str  # what the user asked for
    model_path: str  # NIM_MODEL_PATH as the server sees it
    device: Literal["cpu", "cuda"]
    port: int
    host: str
    cache_dir: Path
    profile_id: str | None = None
    profile_name: str | None = None
    selection: str = ""
    image: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    gpus: GpuRequest = field(default_factory=lambda: GpuRequest("none"))
    shm_size: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    engine_args: list[str] = field(default_factory=list)
    restart: str = "no"
    user: str = ""

    @property
    def url(self) -> str:
        # A wildcard address is reached through the loopback of its own family.
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{url_host(host)}:{self.port}"

    @property
    def labels(self) -> dict[str, str]:
        labels = {
            MANAGED_LABEL: "true",
            f"{LABEL}.model": self.model,
            f"{LABEL}.port": str(self.port),
            f"{LABEL}.host": self.host,
            f"{LABEL}.url": self.url,
            f"{LABEL}.version": __version__,
        }
        if self.profile_id:
            labels[f"{LABEL}.profile"] = self.profile_id
        if self.profile_name:
            labels[f"{LABEL}.profile-name"] = self.profile_name
        return labels


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``-e KEY=VALUE`` (or ``-e KEY``: the caller's value) into a dict; bad input is a UsageError."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not _ENV_NAME.match(key):
            raise UsageError(f"bad -e value {pair!r}: write KEY=VALUE")
        if not sep:
            if key not in os.environ:
                raise UsageError(f"-e {key}: {key} is not set here", hint=f"write -e {key}=VALUE")
            value = os.environ[key]
        env[key] = value
    return env


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"bad instance name {name!r}",
            hint="use letters, digits, '.', '_' and '-' (at most 63), starting with a letter or digit",
        )
    return name


def check_restart(policy: str, runtime: Runtime) -> str:
    base, _, count = policy.partition(":")
    if base not in RESTART_POLICIES or (count and (base != "on-failure" or not count.isdigit())):
        raise UsageError(f"bad --restart {policy!r}", hint="use no, on-failure[:N], always or unless-stopped")
    if runtime == "local" and base != "no":
        raise UsageError(
            "--restart needs the Docker runtime", hint="leave --restart out with --runtime local"
        )
    return policy


def default_name(manifest: Manifest | None, model: str) -> str:
    base = manifest.model.name if manifest else model.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.").lower() or "model"
    return f"nimctl-{slug}"[:63]


@dataclass(frozen=True)
class ResolvedModel:
    manifest: Manifest | None
    model_path: str  # for a host process
    container_model_path: str  # inside the container
    mounts: list[Mount]
    profiles_dir: str | None  # NIMCTL_PROFILES_DIR inside the container, for a manifest given by path


def resolve_model(model: str) -> ResolvedModel:
    """A manifest name or path, a model URI, or a local model folder."""
    from nimctl.profiles import find_manifest

    path = Path(model).expanduser()
    if path.is_dir():
        mount = Mount(path.resolve(), CONTAINER_MODEL)
        return ResolvedModel(None, str(path.resolve()), CONTAINER_MODEL, [mount], None)
    try:
        manifest = find_manifest(model)
    except UsageError:
        if "://" in model:  # NIM's model-free mode: the engine's defaults apply
            return ResolvedModel(None, model, model, [], None)
        raise
    mounts: list[Mount] = []
    profiles_dir = None
    if path.is_file():  # a manifest outside the image: mount it where the server looks first
        mounts.append(Mount(path.resolve(), f"{USER_PROFILES}/{path.name}"))
        profiles_dir = f"{USER_PROFILES}:{CONTAINER_PROFILES}"
    source = manifest.model.source
    return ResolvedModel(manifest, source, source, mounts, profiles_dir)


def plan_run(
    *,
    model: str | None,
    runtime: Runtime,
    profile: str | None = None,
    gpus: str | None = None,
    prefer: str = "throughput",
    port: int = CONTAINER_PORT,
    host: str = "127.0.0.1",
    name: str | None = None,
    cache_dir: Path | None = None,
    env_pairs: list[str] | None = None,
    image: str | None = None,
    engine_args: list[str] | None = None,
    restart: str = "no",
    inventory: Inventory | None = None,
    runtime_note: str | None = None,
) -> RunSpec:
    """Resolve the model and choose the profile on this host; nothing is started.

    ``runtime_note`` says why ``auto`` chose the runtime it did, for the errors that follow from it.
    """
    from nimctl.gpu import detect_inventory
    from nimctl.profiles import select_profile
    from nimctl.runtime.images import default_image
    from nimctl.runtime.paths import default_cache_dir

    if not 1 <= port <= 65535:
        raise UsageError(f"bad --port {port}: use 1-65535")
    if image and runtime == "local":
        raise UsageError(
            "--image needs the Docker runtime, and this run would be a host process"
            + (f"; {runtime_note}" if runtime_note else ""),
            hint="a host process runs this nimctl's own nim-serve: leave --image out, or use Docker",
        )
    host = host.strip().removeprefix("[").removesuffix("]")  # [::1] as people write it in URLs
    model = model or DEFAULT_MODEL
    restart = check_restart(restart, runtime)
    user_env = parse_env(env_pairs or [])
    request = GpuRequest.parse(gpus) if gpus is not None else None
    resolved = resolve_model(model)
    inventory = inventory if inventory is not None else detect_inventory()
    visible = request.visible(inventory) if request else inventory
    profile_id = profile_name = None
    selection = "no manifest lists this model: the engine's defaults apply"
    device = visible.device
    if resolved.manifest is not None:
        chosen = select_profile(resolved.manifest, visible, requested=profile, prefer=prefer)
        profile_id, profile_name, selection = chosen.profile.id, chosen.profile.name, chosen.reason
        device = "cuda" if chosen.profile.device == "cuda" else "cpu"
        gpu_count = chosen.profile.gpu_count if device == "cuda" else 0
    elif profile:
        raise UsageError(f"--profile {profile}: {model} has no manifest, so no profiles")
    else:
        gpu_count = len(visible.gpus)
    if request is None:
        request = GpuRequest("all") if device == "cuda" else GpuRequest("none")
    elif device == "cpu":
        request = GpuRequest("none")
    if runtime == "docker":
        request = request.by_uuid(visible)
    cache = (cache_dir or default_cache_dir()).expanduser().resolve()

    env: dict[str, str] = {}
    if runtime == "docker":
        env["NIM_MODEL_PATH"] = resolved.container_model_path
        if resolved.profiles_dir:
            env["NIMCTL_PROFILES_DIR"] = resolved.profiles_dir
    else:
        env["NIM_MODEL_PATH"] = resolved.model_path
        env["NIM_SERVER_PORT"] = str(port)
        env["NIMCTL_SERVER_HOST"] = host
        env["NIM_CACHE_PATH"] = str(cache)
        if resolved.manifest is not None and Path(model).expanduser().is_file():
            env["NIMCTL_PROFILES_DIR"] = str(Path(model).expanduser().resolve().parent)
        # What --gpus gives a container, for a host process: the engine sees only these GPUs.
        devices = request.cuda_visible_devices(visible)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
    if profile_id:
        env["NIM_MODEL_PROFILE"] = profile_id
    for secret in PASSTHROUGH_SECRETS:
        if os.environ.get(secret) and secret not in user_env:
            env[secret] = os.environ[secret]
    env.update(user_env)

    return RunSpec(
        name=check_name(name) if name else default_name(resolved.manifest, model),
        runtime=runtime,
        model=model,
        model_path=env["NIM_MODEL_PATH"],
        device=device,
        port=port,
        host=host,
        cache_dir=cache,
        profile_id=profile_id,
        profile_name=profile_name,
        selection=selection,
        image=(image or default_image(device)) if runtime == "docker" else None,
        env=env,
        gpus=request,
        # NIM's guidance: multi-GPU needs a large /dev/shm; Docker's default 64 MiB is too small
        # even for vLLM's own inter-process queues.
        shm_size="16g" if gpu_count > 1 else "1g",
        mounts=resolved.mounts if runtime == "docker" else [],
        engine_args=list(engine_args or []),
        restart=restart,
        user=f"{os.getuid()}:{os.getgid()}",
    )
