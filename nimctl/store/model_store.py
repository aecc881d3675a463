"""NIM's container utilities, as a library: ``download-to-cache`` (a model's profiles into the
cache) and ``create-model-store`` (a profile's files as a plain model folder).

Every profile of a nimctl manifest reads the model's one ``source`` (``hf://``, ``builtin://``
or a folder): profiles differ in engine arguments, not in weights. So "a profile's files" are
the source's, fetched by the calls ``nimctl pull`` makes (:func:`nimctl.store.target.pull_model`:
huggingface_hub into ``NIM_CACHE_PATH/huggingface``, a built-in model generated), or, offline
(``NIM_DISABLE_MODEL_DOWNLOAD``), only checked with :func:`nimctl.store.pull.cached_result`.

The commands (:mod:`nimctl.cli.nim_utilities`) read the server's variables and pass them in:
this package never imports the server.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.errors import DiskFullError, UsageError
from nimctl.store.pull import PullResult, cached_result
from nimctl.store.source import ModelSource
from nimctl.store.target import PullTarget, named_profile, pull_model, resolve_source

if TYPE_CHECKING:
    from nimctl.profiles import Manifest, Profile
    from nimctl.store.progress import ProgressListener

# nim-serve takes a folder holding this file as a whole model (nimctl.store.source): it is
# copied last, so an interrupted copy is never mistaken for a model store.
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ModelFiles:
    """A model named as ``nimctl run`` names it, resolved: its manifest (if any) and its source."""

    model: str
    manifest: Manifest | None
    source: ModelSource

    def describe(self) -> str:
        return self.manifest.name if self.manifest is not None else self.source.uri


@dataclass(frozen=True)
class ModelStore:
    """What :func:`create_model_store` made."""

    folder: Path
    files: int
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"model_store": str(self.folder), "files": self.files, "size_bytes": self.size_bytes}


def model_files(model: str) -> ModelFiles:
    """``model`` as ``nimctl run`` and ``nimctl pull`` resolve it (a manifest name or file, a URI,
    a folder); an ``hf://ORG/NAME@REV`` given keeps its revision even when a manifest matches it."""
    manifest, source = resolve_source(model)
    return ModelFiles(model, manifest, source)


def find_profiles(target: ModelFiles, refs: Sequence[str]) -> list[Profile]:
    """The profiles ``refs`` name (an id, a 6+ digit id prefix or a name), in the order given, once
    each. Any profile, runnable here or not: the cache may be filled for another machine."""
    manifest = target.manifest
    if manifest is None:
        raise UsageError(
            f"--profile {refs[0]}: {target.model} has no manifest, so no profiles",
            hint="leave --profile out: the model's files are fetched as they are",
        )
    found: list[Profile] = []
    for ref in refs:
        profile = named_profile(manifest, ref)
        if profile not in found:
            found.append(profile)
    return found


def fetch_files(
    target: ModelFiles,
    cache: Path,
    *,
    offline: bool = False,
    on_progress: ProgressListener | None = None,
) -> PullResult:
    """The model's files in ``cache``, fetched as ``nimctl pull`` fetches them (HF_TOKEN read by
    huggingface_hub). ``offline``: a hub model is only checked, never fetched (a
    ModelUnavailableError naming the missing files); a built-in model is generated here, which
    needs no network, and a folder is only checked."""
    source = target.source
    if offline and source.kind == "hf":
        return cached_result(source.name, cache, revision=source.revision)
    return pull_model(
        PullTarget(source, source.revision, target.manifest, None), cache, on_progress=on_progress
    )


def create_model_store(files: Path, destination: Path) -> ModelStore:
    """Copy the model folder ``files`` (a cache snapshot, whose files are links to blobs) into
    ``destination`` as real files, for ``NIM_MODEL_PATH`` to point at; ``destination`` must be new
    or empty. ``config.json`` comes last, and an interrupted or failed copy removes what it wrote."""
    destination = destination.expanduser()
    if destination.exists() and not destination.is_dir():
        raise UsageError(
            f"--model-store {destination}: a file is in the way", hint="give a new or empty folder"
        )
    if destination.is_dir() and any(destination.iterdir()):
        raise UsageError(
            f"--model-store {destination} is not empty",
            hint="give a new or empty folder (files already there would mix with the model's)",
        )
    if destination.resolve().is_relative_to(files.resolve()):
        raise UsageError(f"--model-store {destination} is inside the model's own folder {files}")
    sources = sorted(path for path in files.rglob("*") if path.is_file())
    sources.sort(key=lambda path: path.relative_to(files).as_posix() == CONFIG_FILE)  # stable: the rest first
    created = not destination.exists()
    size = 0
    try:
        destination.mkdir(parents=True, exist_ok=True)
        for path in sources:
            copy = destination / path.relative_to(files)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)  # follows the snapshot's links: the blob's bytes, not a link
            size += copy.stat().st_size
    except BaseException as exc:
        _undo(destination, created)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise DiskFullError(
                f"the disk under {destination} filled up while copying the model; nothing was left there",
                hint="free space, or give --model-store a folder on another disk",
            ) from exc
        if isinstance(exc, OSError):
            raise UsageError(
                f"cannot write the model store {destination}: {exc.strerror or exc}",
                hint="give a folder you can write to",
            ) from exc
        raise
    return ModelStore(destination, len(sources), size)


def _undo(destination: Path, created: bool) -> None:
    """Remove what a failed copy wrote: the folder if it made it, else what it put in the empty one."""
    if created:
        shutil.rmtree(destination, ignore_errors=True)
        return
    for child in list(destination.iterdir()) if destination.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
