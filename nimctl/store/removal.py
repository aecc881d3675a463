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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.errors import UsageError
from nimctl.store import layout
from nimctl.store.inventory import CachedModel

if TYPE_CHECKING:
    from nimctl.runtime.instances import Instance


@dataclass(frozen=True)
class Removal:
    """What a removal will take (or took): the models, and trash left by earlier interrupted ones."""

    models: tuple[CachedModel, ...]
    leftovers: tuple[Path, ...] = ()

    @property
    def size_bytes(self) -> int:
        return sum(model.size_bytes for model in self.models) + sum(_size(path) for path in self.leftovers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": [model.uri for model in self.models],
            "size_bytes": self.size_bytes,
            "leftovers": [str(path) for path in self.leftovers],
        }


def users_of(model: CachedModel, cache: Path, instances: Iterable[Instance]) -> list[Instance]:
    """The running instances that read ``model`` from ``cache``."""
    wanted = model.uri.lower()
    found = []
    for instance in instances:
        source = (instance.source or "").split("@", 1)[0].rstrip("/").lower()
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
    return Removal((model,), tuple(trash_folders(cache)))


def plan_prune(models: Sequence[CachedModel], cache: Path, instances: Sequence[Instance]) -> Removal:
    """Every model no manifest lists and no running instance reads, plus leftover trash."""
    unused = tuple(m for m in models if not m.manifests and not users_of(m, cache, instances))
    return Removal(unused, tuple(trash_folders(cache)))


def carry_out(removal: Removal) -> None:
    """Rename each model out of the way, then delete it; then delete the leftovers."""
    doomed = [_to_trash(model.folder) for model in removal.models]
    for path in [*doomed, *removal.leftovers]:
        shutil.rmtree(path, ignore_errors=True)


def trash_folders(cache: Path) -> list[Path]:
    """Models half removed, and imports half staged, by a process that was killed."""
    found: list[Path] = []
    for root in (layout.hub_dir(cache), layout.builtin_dir(cache)):
        if root.is_dir():
            found.extend(path for path in root.iterdir() if path.name.startswith(layout.TRASH_PREFIX))
    if cache.is_dir():
        found.extend(path for path in cache.iterdir() if path.name.startswith(layout.IMPORT_PREFIX))
    return sorted(found)


def _to_trash(folder: Path) -> Path:
    target = folder.with_name(f"{layout.TRASH_PREFIX}{folder.name}-{os.getpid()}")
    os.rename(folder, target)
    return target


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
