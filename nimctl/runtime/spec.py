"""What to run: the :class:`RunSpec` both runtimes (Docker and a host process) start from and
``--dry-run`` prints, and the checks of ``nimctl run``'s arguments.

:func:`nimctl.runtime.planning.plan_run` builds it from those arguments.
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
    from nimctl.profiles import Manifest
    from nimctl.runtime.credentials import Security

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
    security: Security | None = None  # the key and TLS files written at start (None: an open server)
    # `--lora-dir` (the host folder) and `--lora-refresh` (seconds): labelled, so that
    # `nimctl lora add/rm` know where to write for this instance and that it rescans.
    lora_dir: Path | None = None
    lora_refresh: float | None = None
    # `--nodes N` (nimctl.runtime.group): the group's spec has ``nodes`` > 1; each member's spec
    # (the runtime's ``members()``) also names its group and rank. A worker publishes no port
    # (``publish``); a container member runs on the group's network with its share of the CPUs.
    nodes: int = 1
    group: str | None = None
    rank: int = 0
    publish: bool = True
    network: str | None = None
    cpus: float | None = None
    address: str = ""  # where the other members reach this one (the state record, ``ps``)
    # NIMCTL_IDLE_STOP's seconds as the server will read them (None: off); labelled, so that
    # `ps` knows it even when the server does not answer.
    idle_stop: float | None = None

    @property
    def url(self) -> str:
        # A wildcard address is reached through the loopback of its own family.
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        scheme = "https" if self.security is not None and self.security.tls else "http"
        return f"{scheme}://{url_host(host)}:{self.port}"

    @property
    def labels(self) -> dict[str, str]:
        labels = {contract.MANAGED_LABEL: "true", contract.MODEL_LABEL: self.model}
        if self.publish:  # a worker has no URL: nothing may take it for a server to talk to
            labels |= {
                contract.PORT_LABEL: str(self.port),
                contract.HOST_LABEL: self.host,
                contract.URL_LABEL: self.url,
            }
        labels |= {
            contract.VERSION_LABEL: __version__,
            contract.SOURCE_LABEL: self.model_path,
            contract.CACHE_LABEL: str(self.cache_dir),
        }
        if self.profile_id:
            labels[contract.PROFILE_LABEL] = self.profile_id
        if self.profile_name:
            labels[contract.PROFILE_NAME_LABEL] = self.profile_name
        if self.lora_dir is not None:
            labels[contract.LORA_DIR_LABEL] = str(self.lora_dir)
        if self.lora_refresh is not None:
            labels[contract.LORA_REFRESH_LABEL] = f"{self.lora_refresh:g}"
        if self.idle_stop is not None:
            labels[contract.IDLE_STOP_LABEL] = f"{self.idle_stop:g}"
        if self.group is not None:
            labels[contract.GROUP_LABEL] = self.group
            labels[contract.NODE_RANK_LABEL] = str(self.rank)
            labels[contract.NODES_LABEL] = str(self.nodes)
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


def check_restart(policy: str) -> str:
    """A restart policy as Docker spells it (a runtime without restarts refuses any but ``no``)."""
    base, _, count = policy.partition(":")
    if base not in RESTART_POLICIES or (count and (base != "on-failure" or not count.isdigit())):
        raise UsageError(f"bad --restart {policy!r}", hint="use no, on-failure[:N], always or unless-stopped")
    return policy


# Docker restarts a container that exits 0 under these: an idle stop would never stay stopped.
ALWAYS_RESTART = ("always", "unless-stopped")


def check_idle_stop(value: str, *, where: str) -> float | None:
    """NIMCTL_IDLE_STOP's seconds as nim-serve reads them (None: off); ``where`` names the flag or
    ``-e`` it came from in the error."""
    try:
        seconds = contract.parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"bad {where}: {exc}", hint="0 turns the idle stop off") from None
    return seconds or None


def check_restart_with_idle_stop(policy: str, idle_stop: float | None) -> None:
    """An idle stop exits 0, which ``always`` and ``unless-stopped`` would restart at once."""
    base = policy.partition(":")[0]
    if idle_stop is not None and base in ALWAYS_RESTART:
        raise UsageError(
            f"--restart {policy} would start the instance again after each idle stop",
            hint="use --restart on-failure with --idle-stop: it restarts a crash, not an idle stop (exit 0)",
        )


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
    """A manifest name or path, a model URI, or a local model folder (found as ``nimctl pull``
    finds it: :func:`nimctl.store.target.resolve_source`), and how a container reaches it."""
    from nimctl.store.target import resolve_source

    manifest, source = resolve_source(model)
    if source.kind == "local":
        mount = Mount(Path(source.name), contract.CONTAINER_MODEL)
        return ResolvedModel(None, source.name, contract.CONTAINER_MODEL, [mount], None)
    if manifest is None:  # NIM's model-free mode: the engine's defaults apply
        return ResolvedModel(None, source.uri, source.uri, [], None)
    path = Path(model).expanduser()
    mounts: list[Mount] = []
    profiles_dir = None
    if path.is_file():  # a manifest outside the image: mount it where the server looks first
        mounts.append(Mount(path.resolve(), f"{contract.CONTAINER_USER_PROFILES}/{path.name}"))
        profiles_dir = f"{contract.CONTAINER_USER_PROFILES}:{contract.CONTAINER_PROFILES}"
    return ResolvedModel(manifest, source.uri, source.uri, mounts, profiles_dir)
