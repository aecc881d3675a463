"""``nimctl run``'s plan: resolve the model, choose the profile as the server would, and say
how the chosen runtime gives the server all of it (its :class:`~nimctl.runtime.placement.Placement`).
Nothing is started here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from nimctl import contract
from nimctl.errors import UsageError
from nimctl.runtime.gpu_request import GpuRequest
from nimctl.runtime.placement import PLACEMENTS, Placement
from nimctl.runtime.spec import (
    Mount,
    RunSpec,
    Runtime,
    check_idle_stop,
    check_name,
    check_restart,
    check_restart_with_idle_stop,
    default_name,
    parse_env,
    resolve_model,
)

if TYPE_CHECKING:
    from nimctl.gpu import Inventory
    from nimctl.profiles import Manifest
    from nimctl.profiles.selection import Selection
    from nimctl.runtime.credentials import Security

# huggingface_hub's switch: no request at all, the cache only (nim-serve's engine gets it too).


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
    lora_dir: Path | None = None,
    lora_refresh: float | None = None,
    max_model_len: int | None = None,
    security: Security | None = None,
    offline: bool = False,
    nodes: int = 1,
    idle_stop: str | None = None,
) -> RunSpec:
    """Resolve the model and choose the profile on this host; nothing is started.

    The profile is chosen from the environment the server will get, through the function
    ``nim-serve`` selects with (:func:`nimctl.server.selection_inputs.selection_inputs`), so the
    profile pinned here is the one the server would choose itself. ``--profile``, ``--lora-dir``,
    ``--lora-refresh``, ``--max-model-len`` and ``--prefer`` (None: not given) set their variables
    over ``-e`` ones,
    as a flag wins over a variable. ``runtime_note`` says why ``auto`` chose the runtime it did,
    for the errors that follow from it. ``security`` (None: an open server) is the key and TLS
    the instance gets: the server is told where its credentials folder is (:func:`_credentials`).
    ``offline`` sets ``NIM_DISABLE_MODEL_DOWNLOAD=1`` over a ``-e`` one; the server then gets
    ``HF_HUB_OFFLINE=1`` too (:func:`check_offline` checks the cache before the start).
    ``nodes`` > 1 plans a group (``--nodes``): the profile is chosen for that many nodes, and the
    runtime describes each member from the spec (:mod:`nimctl.runtime.group`).
    ``idle_stop`` (``--idle-stop``, a duration) sets ``NIMCTL_IDLE_STOP`` over a ``-e`` one; either
    is read as the server reads it, and refused with a restart policy that restarts an exit 0.
    """
    from nimctl.gpu import detect_inventory
    from nimctl.profiles.selection import parse_preference
    from nimctl.runtime.group import check_nodes

    placement = PLACEMENTS[runtime]
    check_nodes(nodes)
    if not 1 <= port <= 65535:
        raise UsageError(f"bad --port {port}: use 1-65535")
    placement.check(image=image, restart=check_restart(restart), note=runtime_note)
    host = host.strip().removeprefix("[").removesuffix("]")  # [::1] as people write it in URLs
    user_env = parse_env(env_pairs or [])
    if contract.MODEL_PATH in user_env:
        raise UsageError(
            f"-e {contract.MODEL_PATH}: nimctl run sets it from the model it resolves",
            hint=f"name the model as the argument: nimctl run {user_env[contract.MODEL_PATH]}",
        )
    group_vars = [key for key in contract.node_environment(2, 1, "-", node_address="-") if key in user_env]
    if nodes > 1 and group_vars:
        raise UsageError(
            f"-e {group_vars[0]}: nimctl run --nodes sets it for each node of the group",
            hint="leave it out; the docs' multi-host commands set it by hand (docs/multinode.md)",
        )
    if security is not None:
        _check_exposure(host, security, user_env)
    resolved = resolve_model(model or contract.DEFAULT_MODEL)
    # What the user named, for names and labels: the default model by its manifest's name.
    model = model or (resolved.manifest.model.name if resolved.manifest else contract.DEFAULT_MODEL)
    request = GpuRequest.parse(gpus) if gpus is not None else None
    inventory = inventory if inventory is not None else detect_inventory()
    visible = request.visible(inventory) if request else inventory
    cache = (cache_dir or contract.host_cache_dir()).expanduser().resolve()
    mounts = placement.mounts(resolved)

    options: dict[str, str] = {}  # the flags' variables, over -e ones
    if lora_refresh is not None and lora_dir is None:
        raise UsageError(
            "--lora-refresh needs --lora-dir: it sets how often that folder is rescanned",
            hint="add --lora-dir DIR (nimctl lora demo makes a folder of demo adapters)",
        )
    if lora_dir is not None:
        lora_dir = _lora_folder(lora_dir)
        options[contract.PEFT_SOURCE] = placement.folder(lora_dir, contract.CONTAINER_LORA, mounts)
    if lora_refresh is not None:
        if not 0 < lora_refresh < float("inf"):  # NaN fails this too
            raise UsageError(f"bad --lora-refresh {lora_refresh:g}: give a positive number of seconds")
        options[contract.PEFT_REFRESH_INTERVAL] = f"{lora_refresh:g}"
    if max_model_len is not None:
        options[contract.MAX_MODEL_LEN] = str(max_model_len)
    if prefer is not None:
        options[contract.PROFILE_PREFERENCE] = parse_preference(prefer)
    if profile is not None:
        options[contract.MODEL_PROFILE] = profile
    if offline:
        options[contract.DISABLE_MODEL_DOWNLOAD] = "1"
    if idle_stop is not None:
        check_idle_stop(idle_stop, where=f"--idle-stop {idle_stop!r}")
        options[contract.IDLE_STOP] = idle_stop.strip()  # as given: the server reads it as checked here
    # The flag's value, else a -e one: what the server will read, read as it reads it.
    idle_text = options.get(contract.IDLE_STOP, user_env.get(contract.IDLE_STOP, "")).strip()
    where = f"-e {contract.IDLE_STOP}={idle_text}"
    idle_seconds = check_idle_stop(idle_text, where=where) if idle_text else None
    check_restart_with_idle_stop(restart, idle_seconds)
    if nodes > 1:  # each member's rank and addresses are the runtime's (its members())
        options[contract.NUM_COMPUTE_NODES] = str(nodes)
    name = check_name(name) if name else default_name(resolved.manifest, model)
    if security is not None and security.any:
        options.update(_credentials(placement, name, security, mounts))

    def server_env(profile_id: str | None = None, devices: str | None = None) -> dict[str, str]:
        env = placement.server_env(resolved, model, port, host, cache)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
        if profile_id:
            env[contract.MODEL_PROFILE] = profile_id
        offline_run = is_offline({**user_env, **options})
        for secret in contract.PASSTHROUGH_SECRETS:
            # An offline run has nothing to fetch, so it carries no credentials (NIM's air-gap guide).
            if os.environ.get(secret) and secret not in user_env and not offline_run:
                env[secret] = os.environ[secret]
        env.update(user_env)
        env.update(options)
        if offline_run:  # huggingface_hub's own switch, for nim-serve's fetch and the engine alike
            env[contract.HF_HUB_OFFLINE] = "1"
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
        # A group member holds one node's share: tp x pp across all the group's nodes, divided by them.
        gpu_count = chosen.profile.gpus_per_node if device == "cuda" else 0
    elif profile:
        raise UsageError(f"--profile {profile}: {model} has no manifest, so no profiles")
    else:
        gpu_count = len(visible.gpus)
    if request is None:
        request = GpuRequest("all") if device == "cuda" else GpuRequest("none")
    elif device == "cpu":
        request = GpuRequest("none")
    request, devices = placement.gpus(request, visible)
    env = server_env(profile_id, devices)

    return RunSpec(
        name=name,
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
        image=placement.image(image, device),
        env=env,
        gpus=request,
        # NIM's guidance: multi-GPU needs a large /dev/shm; Docker's default 64 MiB is too small
        # even for vLLM's own inter-process queues.
        shm_size="16g" if gpu_count > 1 else "1g",
        mounts=mounts,
        engine_args=list(engine_args or []),
        restart=restart,
        user=f"{os.getuid()}:{os.getgid()}",
        security=security if security is not None and security.any else None,
        lora_dir=lora_dir,
        lora_refresh=lora_refresh,
        nodes=nodes,
        idle_stop=idle_seconds,
    )


def is_offline(env: Mapping[str, str]) -> bool:
    """Whether the server will never download (``NIM_DISABLE_MODEL_DOWNLOAD``, read as nim-serve
    reads it: a value it would refuse is its ConfigError here, before anything starts)."""
    from nimctl.server.config import ServerConfig

    value = env.get(contract.DISABLE_MODEL_DOWNLOAD)
    if not value:  # unset or empty: nim-serve counts an empty variable as unset
        return False
    return ServerConfig.from_env({contract.DISABLE_MODEL_DOWNLOAD: value}).disable_model_download


def check_offline(spec: RunSpec) -> None:
    """An offline run of a hub model needs all of its files in the host cache (the one mounted
    for the server): checked here, by the function the server calls, so that a missing file
    fails at once (exit 11, naming the files) instead of after the start. A built-in model is
    generated without the network and a folder is read where it is: both always pass."""
    from nimctl.store.pull import require_cached
    from nimctl.store.source import HF_SCHEME, parse_model_source

    if not is_offline(spec.env) or not spec.model_path.startswith(HF_SCHEME):
        return
    source = parse_model_source(spec.model_path)
    require_cached(source.name, spec.cache_dir, revision=source.revision)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a name other than localhost counts as exposed)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_exposure(host: str, security: Security, user_env: dict[str, str]) -> None:
    """No key on an address others can reach is refused unless asked for twice (--no-auth --i-know)."""
    keyed = security.api_key or contract.API_KEY in user_env or contract.API_KEY_FILE in user_env
    if keyed or is_loopback(host) or security.open_to_network:
        return
    raise UsageError(
        f"--no-auth on {host}: anyone who reaches that address could use the model",
        hint="leave --no-auth out (nimctl makes a key and its commands use it), publish on 127.0.0.1, "
        "or add --i-know to serve it open on purpose",
    )


def _credentials(placement: Placement, name: str, security: Security, mounts: list[Mount]) -> dict[str, str]:
    """The server's variables for the instance's credentials folder: only paths, never the key,
    so the key is in no environment or command line (``ps``, ``docker inspect``). The folder
    is written at start (:func:`nimctl.runtime.credentials.create`), not here."""
    from nimctl.runtime.credentials import folder_for

    where = placement.folder(folder_for(name), contract.CONTAINER_CREDENTIALS, mounts)
    env: dict[str, str] = {}
    if security.api_key:
        env[contract.API_KEY_FILE] = f"{where}/{contract.API_KEYS_FILE_NAME}"
    if security.tls:
        env[contract.SSL_MODE] = "MTLS" if security.mtls else "TLS"
        env[contract.SSL_KEY_PATH] = f"{where}/{contract.SERVER_KEY_FILE_NAME}"
        env[contract.SSL_CERTS_PATH] = f"{where}/{contract.SERVER_CERT_FILE_NAME}"
        env[contract.SSL_CA_CERTS_PATH] = f"{where}/{contract.CA_CERT_FILE_NAME}"
    return env


def _lora_folder(folder: Path) -> Path:
    """The adapters folder, absolute: the label `nimctl lora add` writes by must not depend on
    the directory `nimctl run` was started in."""
    path = folder.expanduser()
    if not path.is_dir():
        raise UsageError(
            f"--lora-dir {folder}: not a folder",
            hint="give the folder of LoRA adapters, one sub-folder each (nimctl lora demo makes one)",
        )
    return path.resolve()


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
        nodes=inputs.nodes,
    )
