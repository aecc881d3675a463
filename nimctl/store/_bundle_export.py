"""What :func:`nimctl.store.bundle.export_bundle` puts in a bundle: the model's members, found in
the cache (and checked complete there) before anything is written."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nimctl import __version__
from nimctl.errors import ModelUnavailableError
from nimctl.store import _bundle_archive as archive_io
from nimctl.store import layout
from nimctl.store._bundle_archive import CACHE_PREFIX, FORMAT_VERSION
from nimctl.store.source import ModelSource


@dataclass(frozen=True)
class _Entry:
    member: str
    path: Path | None = None  # a regular file
    link: str | None = None  # a symlink's target, as stored
    size: int = 0


@dataclass
class Plan:
    info: dict[str, Any]
    entries: list[_Entry] = field(default_factory=list)

    @property
    def model_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)


def export_plan(source: ModelSource, manifest: Path | None, cache: Path) -> Plan:
    """Every model member, checked complete in the cache first (nothing is written yet)."""
    info: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "model": source.uri,
        "kind": source.kind,
        "name": source.name,
        "repo": source.name if source.kind == "hf" else None,
        "revision": (source.revision or "main") if source.kind == "hf" else None,
        "commit": None,
        "refs": [],
        "folder": "",
        "manifest": manifest.name if manifest else None,
        "image": None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nimctl_version": __version__,
        "links": {},
    }
    plan = Plan(info)
    if source.kind == "builtin":
        source.fetch(cache)  # generated here when missing: local and deterministic, no network
        folder = layout.builtin_dir(cache) / source.name
        info["folder"] = folder.relative_to(cache).as_posix()
        plan.entries = _walk(folder, CACHE_PREFIX + info["folder"])
    else:
        from nimctl.store.pull import require_cached

        try:
            snapshot = require_cached(source.name, cache, revision=source.revision)
        except ModelUnavailableError as exc:  # its hint is for a run; here the model is only missing
            exc.hint = f"pull it first: nimctl pull {source.uri}"
            raise
        root = layout.repo_dir(cache, source.name)
        info["commit"] = commit = snapshot.name
        info["folder"] = root.relative_to(cache).as_posix()
        plan.entries, info["refs"] = _hf_entries(root, commit, CACHE_PREFIX + info["folder"])
    info["links"] = {entry.member: entry.link for entry in plan.entries if entry.link is not None}
    return plan


def _walk(folder: Path, prefix: str) -> list[_Entry]:
    """Files and symlinks under ``folder`` as members under ``prefix``; symlinks stay symlinks."""
    entries: list[_Entry] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted([*filenames, *(d for d in dirnames if (here / d).is_symlink())]):
            path = here / name
            member = f"{prefix}/{path.relative_to(folder).as_posix()}"
            if path.is_symlink():
                entries.append(_Entry(member, link=os.readlink(path)))
            elif path.is_file():
                entries.append(_Entry(member, path=path, size=path.stat().st_size))
    return entries


def _hf_entries(root: Path, commit: str, prefix: str) -> tuple[list[_Entry], list[str]]:
    """The snapshot ``commit`` of a hub repository folder: its blobs, the snapshot, tree and refs."""
    snapshot = _walk(root / "snapshots" / commit, f"{prefix}/snapshots/{commit}")
    blobs: dict[str, _Entry] = {}
    for entry in snapshot:
        if entry.link is None:
            continue  # a cache written without symlinks holds the files in the snapshot itself
        archive_io.check_link(entry.member, entry.link, prefix)
        relative = os.path.normpath(os.path.join(os.path.dirname(entry.member), entry.link))
        blob = root / Path(relative).relative_to(prefix)
        if blob.is_file() and not blob.is_symlink():
            blobs[relative] = _Entry(relative, path=blob, size=blob.stat().st_size)
    entries = [blobs[name] for name in sorted(blobs)]
    tree = root / "trees" / f"{commit}.json"
    if tree.is_file():
        entries.append(_Entry(f"{prefix}/trees/{commit}.json", path=tree, size=tree.stat().st_size))
    entries += snapshot
    refs = [
        entry
        for entry in _walk(root / "refs", f"{prefix}/refs")
        if entry.path is not None and entry.path.read_text().strip() == commit
    ]
    return entries + refs, [entry.member.removeprefix(f"{prefix}/refs/") for entry in refs]
