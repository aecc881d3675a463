"""What the model cache holds: ``nimctl cache ls`` and ``du``.

Hub models are read with huggingface_hub's own ``scan_cache_dir`` (sizes count each blob once,
however many revisions link it; ``last_used`` is the newest access time of a blob, as ``hf cache
ls`` shows it). Built-in models are folders nimctl generated. Each entry says which manifest
profiles it serves: the profiles of every manifest whose ``source`` names the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nimctl.store import layout
from nimctl.store.source import BUILTIN_SCHEME, HF_SCHEME, source_key


@dataclass(frozen=True)
class CachedRevision:
    commit: str
    refs: tuple[str, ...]
    size_bytes: int
    files: int


@dataclass(frozen=True)
class CachedModel:
    uri: str  # hf://ORG/NAME or builtin://NAME
    kind: str  # "hf" | "builtin"
    folder: Path
    size_bytes: int
    files: int
    last_used: datetime | None
    revisions: tuple[CachedRevision, ...] = ()
    profiles: tuple[str, ...] = ()  # "manifest/profile-name" of every profile that serves it
    partial_bytes: int = 0  # files of cut-off downloads (never reused; prune deletes them once stale)
    manifests: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.uri,
            "source": self.kind,
            "folder": str(self.folder),
            "size_bytes": self.size_bytes,
            "files": self.files,
            "last_used": self.last_used.isoformat() if self.last_used else None,
            "revisions": [
                {"commit": r.commit, "refs": list(r.refs), "size_bytes": r.size_bytes, "files": r.files}
                for r in self.revisions
            ],
            "manifests": list(self.manifests),
            "profiles": list(self.profiles),
            "partial_bytes": self.partial_bytes,
        }


def cached_models(cache: Path, *, profiles_dir: str | None = None) -> list[CachedModel]:
    """Every model in ``cache``, hub models first, each sorted by name."""
    served = _served_by(profiles_dir, layout.manifests_dir(cache))
    found = [*_hub_models(cache, served), *_builtin_models(cache, served)]
    return sorted(found, key=lambda model: (model.kind != "hf", model.uri.lower()))


def find_cached(cache: Path, model: str, *, profiles_dir: str | None = None) -> CachedModel | None:
    """The cached model ``model`` names: its URI (``hf://ORG/NAME``, ``builtin://NAME``), ``ORG/NAME``,
    or a manifest name whose source is cached."""
    wanted = _uri_of(model, profiles_dir)
    for entry in cached_models(cache, profiles_dir=profiles_dir):
        if source_key(entry.uri) == source_key(wanted):
            return entry
    return None


def _uri_of(model: str, profiles_dir: str | None) -> str:
    if model.startswith((HF_SCHEME, BUILTIN_SCHEME)):
        return model
    if model.count("/") == 1 and not Path(model).exists():
        return HF_SCHEME + model
    from nimctl.errors import UsageError
    from nimctl.profiles.loader import find_manifest

    try:
        return find_manifest(model, profiles_dir).model.source
    except UsageError:
        return model


def _served_by(profiles_dir: str | None, imported: Path) -> dict[str, tuple[list[str], list[str]]]:
    """source URI (lower case, no revision) -> (manifest names, "manifest/profile" names), from the
    manifests on the search path and those imported bundles brought into the cache."""
    from nimctl.errors import ManifestError
    from nimctl.profiles.loader import load_manifest, manifest_files

    served: dict[str, tuple[list[str], list[str]]] = {}
    paths = manifest_files(profiles_dir)
    if imported.is_dir():
        paths += manifest_files(str(imported))
    for path in dict.fromkeys(p.resolve() for p in paths):
        try:
            manifest = load_manifest(path)
        except ManifestError:
            continue  # a broken manifest is `nimctl profiles`'s to report, not the cache's
        key = source_key(manifest.model.source)
        names, profiles = served.setdefault(key, ([], []))
        names.append(manifest.model.name)
        profiles.extend(f"{manifest.model.name}/{profile.name}" for profile in manifest.profiles)
    return served


def _hub_models(cache: Path, served: dict[str, tuple[list[str], list[str]]]) -> list[CachedModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    root = layout.hub_dir(cache)
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        uri = HF_SCHEME + repo.repo_id
        manifests, profiles = served.get(source_key(uri), ([], []))
        revisions = tuple(
            CachedRevision(
                commit=rev.commit_hash,
                refs=tuple(sorted(rev.refs)),
                size_bytes=rev.size_on_disk,
                files=rev.nb_files,
            )
            for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        )
        blobs = Path(repo.repo_path) / "blobs"
        partial = sum(p.stat().st_size for p in blobs.glob("*.incomplete")) if blobs.is_dir() else 0
        models.append(
            CachedModel(
                uri=uri,
                kind="hf",
                folder=Path(repo.repo_path),
                size_bytes=repo.size_on_disk,
                files=repo.nb_files,
                last_used=datetime.fromtimestamp(repo.last_accessed, UTC),
                revisions=revisions,
                profiles=tuple(profiles),
                partial_bytes=partial,
                manifests=tuple(manifests),
            )
        )
    return models


def _builtin_models(cache: Path, served: dict[str, tuple[list[str], list[str]]]) -> list[CachedModel]:
    root = layout.builtin_dir(cache)
    if not root.is_dir():
        return []
    models = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        files = [path for path in folder.rglob("*") if path.is_file()]
        stats = [path.stat() for path in files]
        uri = BUILTIN_SCHEME + folder.name
        manifests, profiles = served.get(source_key(uri), ([], []))
        models.append(
            CachedModel(
                uri=uri,
                kind="builtin",
                folder=folder,
                size_bytes=sum(stat.st_size for stat in stats),
                files=len(files),
                last_used=datetime.fromtimestamp(max(s.st_atime for s in stats), UTC) if stats else None,
                profiles=tuple(profiles),
                manifests=tuple(manifests),
            )
        )
    return models
