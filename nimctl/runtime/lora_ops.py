"""``nimctl lora add`` and ``rm`` on a running server: which way, the copy, and the wait.

A server takes a new adapter in one of two ways (docs/lora.md):

- **its folder**, when it rescans it (dynamic mode, ``--lora-refresh``) and that folder is on this
  host (the instance's ``--lora-dir`` label, or a server on this machine whose folder is here): the
  adapter is copied in under a hidden name and renamed into place, so a rescan never sees half a
  copy, then the server's metadata is polled until it serves (or skips) it. A marker file says
  nimctl put it there: ``rm`` deletes only folders that carry it, never the user's own.
- **a load at run time**, when the server allows it (``VLLM_ALLOW_RUNTIME_LORA_UPDATING``): the
  server is told the adapter's path, a container's after a copy into it (:mod:`lora_upload`).

The folder wins when both are possible: what is in the folder outlives a restart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nimctl import contract
from nimctl.errors import RequestRejectedError, RuntimeFailure, UsageError, WaitTimeoutError
from nimctl.lora.folder import ADDED_MARKER
from nimctl.models.builtin import make_readable

if TYPE_CHECKING:
    from nimctl.client.http import NimClient
    from nimctl.client.types import LoraAdapter, LoraAdapters, SkippedLoraAdapter
    from nimctl.runtime.instances import Instance

# Beyond two rescans, the seconds the engine may take to load an adapter on a busy machine.
LOAD_GRACE_S = 30.0
# How long `rm` waits for the requests in flight on an adapter unloaded at run time to end.
UNLOAD_WAIT_S = 600.0
# An adapter's name is its folder's name and a model name in requests: nothing a shell or a URL
# must quote, no hidden (copy in progress) or parent folder.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
ENABLE_HINT = (
    "restart it with --lora-refresh S (dynamic mode: nimctl lora add copies into its --lora-dir), "
    f"or with -e {contract.ALLOW_LORA_UPDATES}=true (adapters loaded at run time)"
)

Way = Literal["folder", "runtime"]


@dataclass(frozen=True)
class Change:
    """What ``add`` or ``rm`` did: which adapter, which way, where the server reads it from."""

    name: str
    action: Literal["added", "removed"]
    way: Way
    path: str  # the adapter's folder: on this host (folder), or as the server was told (runtime)
    adapter: LoraAdapter | None = None  # as the server lists it after an add
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "way": self.way,
            "path": self.path,
            "adapter": self.adapter.raw() if self.adapter is not None else None,
            "seconds": round(self.seconds, 2),
        }


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"bad adapter name {name!r}",
            hint="use letters, digits, '.', '_', '+' and '-' (at most 128), starting with a letter or digit",
        )
    return name


def lora_settings(client: NimClient) -> LoraAdapters:
    """The server's LoRA settings and adapters; a server without LoRA is a usage error."""
    found = client.metadata().lora_adapters
    if found is None:
        raise UsageError(
            f"{client.base_url} serves no LoRA adapters",
            hint="start it with a folder of adapters: nimctl run MODEL --lora-dir DIR [--lora-refresh S]",
        )
    return found


def instance_at(url: str) -> Instance | None:
    """The running nimctl instance at ``url``, for its labels (its --lora-dir, its runtime)."""
    from nimctl.client.http import normalize_base_url
    from nimctl.runtime.manage import list_instances

    target = normalize_base_url(url)
    instances, _ = list_instances(readiness=False)  # a runtime that cannot be asked has none here
    return next((i for i in instances if i.running and i.url and normalize_base_url(i.url) == target), None)


def host_folder(lora: LoraAdapters, instance: Instance | None, url: str) -> Path | None:
    """The server's adapters folder as this host sees it; None when it is not here."""
    from nimctl._httpx import httpx
    from nimctl.runtime.planning import is_loopback

    if instance is not None:
        if instance.lora_dir:
            return Path(instance.lora_dir)
        if instance.runtime == "docker":  # a folder named with -e: inside the container only
            return None
    # A server on this machine (nimctl's or not) may name a host folder; another machine's
    # folder of the same name is not its folder.
    if lora.source and is_loopback(httpx.URL(url).host) and Path(lora.source).is_dir():
        return Path(lora.source)
    return None


def _on_this_host(url: str, instance: Instance | None) -> bool:
    """Whether the server at ``url`` reads this host's files: a host process nimctl started, or a
    server on a loopback address."""
    from nimctl._httpx import httpx
    from nimctl.runtime.planning import is_loopback

    if instance is not None:
        return instance.runtime == "local"
    return is_loopback(httpx.URL(url).host)


def choose_way(lora: LoraAdapters, folder: Path | None, url: str) -> Way:
    if lora.refresh_interval is not None and folder is not None:
        return "folder"
    if lora.runtime_updates:
        return "runtime"
    if lora.refresh_interval is not None:
        why = f"rescans its adapters folder {lora.source}, which is not on this host,"
    else:
        why = "reads its adapters folder only at start"
    raise UsageError(f"{url} {why} and does not load adapters at run time", hint=ENABLE_HINT)


def add_adapter(client: NimClient, name: str, source: Path, *, instance: Instance | None = None) -> Change:
    """Serve the adapter folder ``source`` as ``name`` on the server ``client`` talks to."""
    from nimctl.client.types import SkippedLoraAdapter
    from nimctl.lora.folder import AdapterError, check_adapter, read_adapter

    check_name(name)
    try:
        adapter = read_adapter(source.expanduser())
    except AdapterError as exc:
        hint = "an adapter folder holds adapter_config.json and adapter_model.safetensors (PEFT format)"
        raise UsageError(f"{source}: {exc}", hint=hint) from None
    lora = lora_settings(client)
    if (held := lora.find(name)) is not None:
        state = "served" if held in lora.loaded else "skipped"
        raise UsageError(
            f"{client.base_url} has an adapter named {name} already ({state})",
            hint=f"choose another name, or remove it first: nimctl lora rm {name}",
        )
    try:  # the server checks its base model too; the rank is known here, and cheaper to refuse now
        check_adapter(adapter, max_rank=lora.max_lora_rank, base_names=())
    except AdapterError as exc:
        raise UsageError(
            f"{source}: {exc}", hint="restart the server with a larger NIM_MAX_LORA_RANK"
        ) from None
    folder = host_folder(lora, instance, client.base_url)
    way = choose_way(lora, folder, client.base_url)
    started = time.monotonic()
    if way == "folder":
        assert folder is not None and lora.refresh_interval is not None
        dest = copy_in(adapter.path, folder, name)
        listed = wait_listed(client, name, present=True, interval=lora.refresh_interval)
        if isinstance(listed, SkippedLoraAdapter):
            # The copy is nimctl's own, and a folder the server keeps skipping helps no one.
            remove_copied(dest)
            reason = listed.reason or "no reason given"
            raise UsageError(f"the server skipped adapter {name}: {reason}", hint=f"{dest} was removed again")
        return Change(name, "added", way, str(dest), listed, time.monotonic() - started)
    path = str(adapter.path.resolve())
    container = instance if instance is not None and instance.runtime == "docker" else None
    if container is None and not _on_this_host(client.base_url, instance):
        # The server reads the path on its own machine: this host's path means nothing there.
        raise UsageError(
            f"{client.base_url} is on another machine, which would look for {path} on its own disk",
            hint="copy the adapter to that machine and load it there (POST /v1/load_lora_adapter with "
            "its path), or give that server a rescanned folder (--lora-refresh)",
        )
    if container is not None:  # the container sees no host path but its mounts: the copy goes in
        from nimctl.runtime.lora_upload import remove_from_instance, upload_to_instance

        path = upload_to_instance(container, adapter.path, name)
    try:
        client.load_lora_adapter(name, path)
    except RequestRejectedError:
        if container is not None:  # a copy the server refused would only take room in there
            remove_from_instance(container, name)
        raise
    listed = next((a for a in lora_settings(client).loaded if a.name == name), None)
    return Change(name, "added", way, path, listed, time.monotonic() - started)


def remove_adapter(client: NimClient, name: str, *, instance: Instance | None = None) -> Change:
    """Stop serving adapter ``name``: its folder removed (only one ``add`` copied), or unloaded."""
    from nimctl.client.types import LoraAdapter

    check_name(name)
    lora = lora_settings(client)
    found = lora.find(name)
    folder = host_folder(lora, instance, client.base_url)
    started = time.monotonic()
    if lora.refresh_interval is not None and folder is not None and _exists(folder / name):
        path = folder / name
        if not (path / ADDED_MARKER).is_file():
            raise UsageError(
                f"{path} was not put there by nimctl lora add, so nimctl leaves it alone",
                hint=f"delete it yourself (rm -r {shlex.quote(str(path))}); the server drops it at its "
                "next rescan",
            )
        remove_copied(path)
        wait_listed(client, name, present=False, interval=lora.refresh_interval)
        return Change(name, "removed", "folder", str(path), None, time.monotonic() - started)
    if found is None:
        raise UsageError(f"{client.base_url} has no adapter named {name}", hint="nimctl lora ls lists them")
    if not isinstance(found, LoraAdapter) or (found.origin == "folder" and lora.refresh_interval is not None):
        # In the server's folder (served or skipped), which is not here: it would come back.
        raise UsageError(
            f"adapter {name} is in the server's adapters folder {lora.source}, which is not on this host",
            hint=f"remove {name}'s folder there"
            + ("; the server drops it at its next rescan" if lora.refresh_interval else ", then restart"),
        )
    if not lora.runtime_updates:
        choose_way(lora, None, client.base_url)  # raises: neither way is open
    answer = client.unload_lora_adapter(name)
    if answer.unloaded is False:  # requests on it are in flight: the server unloads it after the last
        wait_listed(client, name, present=False, interval=1.0, timeout=UNLOAD_WAIT_S, rescans=False)
    if (
        instance is not None
        and instance.runtime == "docker"
        and (found.path or "").startswith(contract.CONTAINER_LORA_UPLOADS + "/")
    ):
        from nimctl.runtime.lora_upload import remove_from_instance

        remove_from_instance(instance, name)
    return Change(name, "removed", "runtime", found.path or "", None, time.monotonic() - started)


def wait_listed(
    client: NimClient,
    name: str,
    *,
    present: bool,
    interval: float,
    timeout: float | None = None,
    rescans: bool = True,
) -> LoraAdapter | SkippedLoraAdapter | None:
    """Poll the metadata until the server lists ``name`` (served or skipped) or, with ``present``
    False, no longer does; two rescans and a grace are allowed. The adapter as last listed."""
    timeout = timeout if timeout is not None else 2 * interval + LOAD_GRACE_S
    deadline = time.monotonic() + timeout
    while True:
        found = lora_settings(client).find(name)
        if (found is not None) == present:
            return found
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"the server still {'does not list' if present else 'lists'} adapter {name} after "
                f"{timeout:g} s" + (f" (it rescans every {interval:g} s)" if rescans else ""),
                hint="look at the server's log (nimctl logs NAME); nimctl lora ls shows it later",
            )
        time.sleep(min(0.5, interval / 2))


def copy_in(source: Path, folder: Path, name: str) -> Path:
    """Copy the adapter folder ``source`` to ``folder/name``: under a hidden name first (the server
    skips hidden folders), with nimctl's marker, then renamed into place in one step."""
    dest = folder / name
    if _exists(dest):
        raise UsageError(f"{dest} exists already", hint="choose another name, or remove that folder first")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.nimctl-add-", dir=folder))
    except OSError as exc:
        raise UsageError(
            f"cannot write into the adapters folder {folder}: {exc.strerror or exc}",
            hint="nimctl lora add copies the adapter there; it must be writable by you",
        ) from None
    try:
        # Links are followed: a hub snapshot's files are links into its blobs.
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        marker = {
            "added_by": "nimctl lora add",
            "source": str(source.resolve()),
            "at": datetime.now(UTC).isoformat(),
        }
        (tmp / ADDED_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        make_readable(tmp)  # mkdtemp's 0700 would hide it from a container user of another uid
        os.rename(tmp, dest)
    except OSError as exc:
        raise RuntimeFailure(
            f"could not copy {source} into {folder}: {exc.strerror or exc}",
            hint="check the free space and permissions of the adapters folder",
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left there after the rename
    return dest


def remove_copied(path: Path) -> None:
    """Delete an adapter folder ``add`` copied: renamed to a hidden name first, so that the
    server stops seeing it at once rather than meeting it half-deleted."""
    hidden = path.parent / f".{path.name}.nimctl-rm-{os.getpid()}"
    try:
        os.rename(path, hidden)
    except OSError as exc:
        raise RuntimeFailure(f"could not remove {path}: {exc.strerror or exc}") from None
    shutil.rmtree(hidden, ignore_errors=True)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()
