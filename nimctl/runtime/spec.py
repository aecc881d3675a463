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

from nimctl import __version__, contract
from nimctl.errors import UsageError
from nimctl.runtime.gpu_request import GpuRequest

if TYPE_CHECKING:
    from nimctl.gpu import Inventory
    from nimctl.profiles import Manifest
    from nimctl.profiles.selection import Selection

Runtime = Literal["docker", "local"]
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


def is_secret(name: str) -> bool:
    return name in contract.PASSTHROUGH_SECRETS or bool(_SECRET_NAME.search(name))


def url_host(host: str) -> str:
    """A host as it goes into a URL or ``-p HOST:PORT:PORT``: an IPv6 literal in brackets."""
    return f"[{host}]" if ":" in host else host


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
            contract.MANAGED_LABEL: "true",
            contract.MODEL_LABEL: self.model,
            contract.PORT_LABEL: str(self.port),
            contract.HOST_LABEL: self.host,
            contract.URL_LABEL: self.url,
            contract.VERSION_LABEL: __version__,
        }
        if self.profile_id:
            labels[contract.PROFILE_LABEL] = self.profile_id
        if self.profile_name:
            labels[contract.PROFILE_NAME_LABEL] = self.profile_name
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
        mount = Mount(path.resolve(), contract.CONTAINER_MODEL)
        return ResolvedModel(None, str(path.resolve()), contract.CONTAINER_MODEL, [mount], None)
    try:
        manifest = find_manifest(model)
    except UsageError:
        if "://" in model:  # NIM's model-free mode: the engine's defaults apply
            return ResolvedModel(None, model, model, [], None)
        raise
    mounts: list[Mount] = []
    profiles_dir = None
    if path.is_file():  # a manifest outside the image: mount it where the server looks first
        mounts.append(Mount(path.resolve(), f"{contract.CONTAINER_USER_PROFILES}/{path.name}"))
        profiles_dir = f"{contract.CONTAINER_USER_PROFILES}:{contract.CONTAINER_PROFILES}"
    source = manifest.model.source
    return ResolvedModel(manifest, source, source, mounts, profiles_dir)


def plan_run(
    *,
    model: str | None,
    runtime: Runtime,
    profile: str | None = None,
    gpus: str | None = None,
    prefer: str | None = None,
    port: int = contract.CONTAINER_PORT,
    host: str = "127.0.0.1",
    name: str | None = None,
    cache_dir: Path | None = None,
    env_pairs: list[str] | None = None,
    image: str | None = None,
    engine_args: list[str] | None = None,
    restart: str = "no",
    inventory: Inventory | None = None,
    runtime_note: str | None = None,
    lora: Path | None = None,
    max_model_len: int | None = None,
) -> RunSpec:
    """Resolve the model and choose the profile on this host; nothing is started.

    The profile is chosen from the environment the server will get, through the function
    ``nim-serve`` selects with (:func:`nimctl.server.selection_inputs.selection_inputs`), so the
    profile pinned here is the one the server would choose itself. ``--profile``, ``--lora``,
    ``--max-model-len`` and ``--prefer`` (None: not given) set their variables over ``-e`` ones,
    as a flag wins over a variable. ``runtime_note`` says why ``auto`` chose the runtime it did,
    for the errors that follow from it.
    """
    from nimctl.gpu import detect_inventory
    from nimctl.profiles.selection import parse_preference
    from nimctl.runtime.images import default_image

    if not 1 <= port <= 65535:
        raise UsageError(f"bad --port {port}: use 1-65535")
    if image and runtime == "local":
        raise UsageError(
            "--image needs the Docker runtime, and this run would be a host process"
            + (f"; {runtime_note}" if runtime_note else ""),
            hint="a host process runs this nimctl's own nim-serve: leave --image out, or use Docker",
        )
    host = host.strip().removeprefix("[").removesuffix("]")  # [::1] as people write it in URLs
    restart = check_restart(restart, runtime)
    user_env = parse_env(env_pairs or [])
    if contract.MODEL_PATH in user_env:
        raise UsageError(
            f"-e {contract.MODEL_PATH}: nimctl run sets it from the model it resolves",
            hint=f"name the model as the argument: nimctl run {user_env[contract.MODEL_PATH]}",
        )
    resolved = resolve_model(model or contract.DEFAULT_MODEL)
    # What the user named, for names and labels: the default model by its manifest's name.
    model = model or (resolved.manifest.model.name if resolved.manifest else contract.DEFAULT_MODEL)
    request = GpuRequest.parse(gpus) if gpus is not None else None
    inventory = inventory if inventory is not None else detect_inventory()
    visible = request.visible(inventory) if request else inventory
    cache = (cache_dir or contract.host_cache_dir()).expanduser().resolve()
    mounts = list(resolved.mounts) if runtime == "docker" else []

    options: dict[str, str] = {}  # the flags' variables, over -e ones
    if lora is not None:
        options[contract.PEFT_SOURCE] = _lora_source(lora, runtime, mounts)
    if max_model_len is not None:
        options[contract.MAX_MODEL_LEN] = str(max_model_len)
    if prefer is not None:
        options[contract.PROFILE_PREFERENCE] = parse_preference(prefer)
    if profile is not None:
        options[contract.MODEL_PROFILE] = profile

    def server_env(profile_id: str | None = None, devices: str | None = None) -> dict[str, str]:
        env = _runtime_env(runtime, resolved, model, port, host, cache)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
        if profile_id:
            env[contract.MODEL_PROFILE] = profile_id
        for secret in contract.PASSTHROUGH_SECRETS:
            if os.environ.get(secret) and secret not in user_env:
                env[secret] = os.environ[secret]
        env.update(user_env)
        env.update(options)
        if profile_id:  # the choice, pinned: what the options and -e asked for chose it
            env[contract.MODEL_PROFILE] = profile_id
        return env

    profile_id = profile_name = None
    selection = "no manifest lists this model: the engine's defaults apply"
    device = visible.device
    if resolved.manifest is not None:
        chosen = _select(resolved.manifest, visible, server_env(), engine_args or [])
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
    devices = None
    if runtime == "docker":
        request = request.by_uuid(visible)
    else:
        # What --gpus gives a container, for a host process: the engine sees only these GPUs.
        devices = request.cuda_visible_devices(visible)
    env = server_env(profile_id, devices)

    return RunSpec(
        name=check_name(name) if name else default_name(resolved.manifest, model),
        runtime=runtime,
        model=model,
        model_path=env[contract.MODEL_PATH],
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
        mounts=mounts,
        engine_args=list(engine_args or []),
        restart=restart,
        user=f"{os.getuid()}:{os.getgid()}",
    )


def _runtime_env(
    runtime: Runtime, resolved: ResolvedModel, model: str, port: int, host: str, cache: Path
) -> dict[str, str]:
    """The variables each runtime sets for the server: a container has its paths and port built
    in, a host process is told them."""
    env: dict[str, str] = {}
    if runtime == "docker":
        env[contract.MODEL_PATH] = resolved.container_model_path
        if resolved.profiles_dir:
            env[contract.PROFILES_DIR] = resolved.profiles_dir
        return env
    env[contract.MODEL_PATH] = resolved.model_path
    env[contract.SERVER_PORT] = str(port)
    env[contract.SERVER_HOST] = host
    env[contract.CACHE_PATH] = str(cache)
    if resolved.manifest is not None and Path(model).expanduser().is_file():
        env[contract.PROFILES_DIR] = str(Path(model).expanduser().resolve().parent)
    return env


def _lora_source(folder: Path, runtime: Runtime, mounts: list[Mount]) -> str:
    """``NIM_PEFT_SOURCE`` for ``--lora FOLDER``: the folder itself, mounted in a container."""
    path = folder.expanduser()
    if not path.is_dir():
        raise UsageError(f"--lora {folder}: not a folder", hint="give the folder holding the LoRA adapters")
    if runtime == "local":
        return str(path.resolve())
    mounts.append(Mount(path.resolve(), contract.CONTAINER_LORA))
    return contract.CONTAINER_LORA


def _select(manifest: Manifest, visible: Inventory, env: dict[str, str], engine_args: list[str]) -> Selection:
    """The profile ``nim-serve`` would choose in ``env`` with ``engine_args`` after it, on ``visible``."""
    from nimctl.profiles import select_profile
    from nimctl.server.selection_inputs import selection_inputs

    inputs = selection_inputs(env, engine_args)
    return select_profile(
        manifest,
        visible,
        requested=inputs.profile,
        prefer=inputs.prefer,
        lora=inputs.lora,
        max_model_len=inputs.max_model_len,
    )
