"""``nimctl cache rm`` and ``prune``: never half a model, never one an instance serves.

A model leaves in two steps: its folder is first renamed to a ``.nimctl-trash-`` name next to it
(one atomic rename, so from then on neither ``run`` nor the server finds a model to serve),
then deleted. An interrupted removal leaves only a trash folder, which the next ``rm`` or
``prune`` finishes; it never leaves a model with some of its files gone.

The instances are given by the caller (the CLI asks the runtimes), so this module needs no
runtime: an instance blocks a removal when it reads that model from that cache.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.errors import UsageError
from nimctl.store import layout
from nimctl.store.inventory import CachedModel
from nimctl.store.source import source_key

if TYPE_CHECKING:
    from nimctl.runtime.instances import Instance

# A partial download not written to for this long belongs to no running download.
STALE_PARTIAL_S = 15 * 60


@dataclass(frozen=True)
class Removal:
    """What a removal will take: the models, and what killed processes left (measured when planned)."""

    models: tuple[CachedModel, ...]
    leftovers: tuple[Path, ...] = ()
    size_bytes: int = 0

    @classmethod
    def of(cls, models: tuple[CachedModel, ...], cache: Path) -> Removal:
        leftovers = tuple(leftovers_in(cache))
        size = sum(m.size_bytes + m.partial_bytes for m in models) + sum(_size(p) for p in leftovers)
        return cls(models, leftovers, size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": [model.uri for model in self.models],
            "size_bytes": self.size_bytes,
            "leftovers": [str(path) for path in self.leftovers],
        }


def users_of(model: CachedModel, cache: Path, instances: Iterable[Instance]) -> list[Instance]:
    """The running instances that read ``model`` from ``cache``."""
    wanted = source_key(model.uri)
    found = []
    for instance in instances:
        source = source_key(instance.source or "")
        same_cache = instance.cache is None or Path(instance.cache).resolve() == cache.resolve()
        if instance.running and source == wanted and same_cache:
            found.append(instance)
    return found


def plan_rm(model: CachedModel, cache: Path, instances: Sequence[Instance]) -> Removal:
    """The removal of one model; a UsageError naming the instance when one serves it."""
    users = users_of(model, cache, instances)
    if users:
        names = ", ".join(instance.name for instance in users)
        raise UsageError(
            f"{model.uri} is in use by the running instance {names}",
            hint=f"stop it first: nimctl stop {users[0].name}",
        )
    return Removal.of((model,), cache)


def plan_prune(models: Sequence[CachedModel], cache: Path, instances: Sequence[Instance]) -> Removal:
    """Every model no manifest lists and no running instance reads, plus leftover trash."""
    unused = tuple(m for m in models if not m.manifests and not users_of(m, cache, instances))
    return Removal.of(unused, cache)


def carry_out(removal: Removal) -> None:
    """Rename each model out of the way, then delete it; then delete the leftovers."""
    doomed = [_to_trash(model.folder) for model in removal.models]
    for path in [*doomed, *removal.leftovers]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def leftovers_in(cache: Path) -> list[Path]:
    """What killed processes left: models half removed, imports half staged (their process gone),
    and partial downloads untouched for STALE_PARTIAL_S (huggingface_hub never reuses them)."""
    found: list[Path] = []
    for root in (layout.hub_dir(cache), layout.builtin_dir(cache)):
        if root.is_dir():
            found.extend(path for path in root.iterdir() if path.name.startswith(layout.TRASH_PREFIX))
    if cache.is_dir():
        found.extend(
            p for p in cache.iterdir() if p.name.startswith(layout.IMPORT_PREFIX) and not _owner_alive(p)
        )
    hub = layout.hub_dir(cache)
    if hub.is_dir():
        now = time.time()
        for part in hub.glob("models--*/blobs/*.incomplete"):
            try:
                if now - part.stat().st_mtime > STALE_PARTIAL_S:
                    found.append(part)
            except FileNotFoundError:
                continue
    return sorted(found)


def _owner_alive(scratch: Path) -> bool:
    """An import's scratch folder is named ``.nimctl-import-PID-...``: is that process running?"""
    pid = scratch.name.removeprefix(layout.IMPORT_PREFIX).split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process, alive
    return True


def _to_trash(folder: Path) -> Path:
    target = folder.with_name(f"{layout.TRASH_PREFIX}{folder.name}-{os.getpid()}")
    os.rename(folder, target)
    return target


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
