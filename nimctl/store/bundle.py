"""One archive to carry a model, its manifest and the server image across an air gap.

``nimctl bundle export`` writes a plain tar, members in this order:

- ``bundle.json``: format, model URI, repository and commit, refs, manifest name, image tag,
  creation time, nimctl version, and the model's symlinks (tar checksums cover data only);
- ``manifest/NAME.yaml``: the model's manifest, when it has one;
- ``cache/...``: the model's folder as the cache holds it: for ``hf://`` the exported snapshot
  of ``huggingface/models--ORG--NAME`` (``snapshots/COMMIT`` with its symlinks, the blobs they
  point at, the refs naming COMMIT, ``trees/COMMIT.json``); for ``builtin://`` ``builtin/NAME``;
- ``image.tar``: ``docker save`` of the server image (left out with ``--no-image``);
- ``SHA256SUMS``: every regular member's sha256, written last so a truncated archive lacks it.

``nimctl bundle import`` extracts into a folder inside the target cache (same filesystem, so
the final moves are renames), checks every checksum, and only then loads the image and moves
the model in: blobs, trees, the snapshot folder (one rename), the refs last. A corrupt,
truncated or unsafe archive is an IntegrityError naming the member, with nothing imported.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.errors import DiskFullError, IntegrityError, UsageError
from nimctl.store import _bundle_archive as archive_io
from nimctl.store import _bundle_import as staged
from nimctl.store import layout
from nimctl.store._bundle_archive import (
    CACHE_PREFIX,
    IMAGE_MEMBER,
    INFO_MEMBER,
    MANIFEST_PREFIX,
)
from nimctl.store._bundle_export import export_plan
from nimctl.store.source import ModelSource

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.images import Image

REFUSED_HINT = "nothing was imported; copy the archive again, or export it again on the connected machine"

# The Docker client's read timeout while an image is saved or loaded: a wait for each read, not
# for the whole gigabytes, so it only ends a daemon that stopped answering (one wedged by an
# interrupted save did so, and an export then waited forever).
SAVE_READ_TIMEOUT_S = 600

# (what is happening, bytes done, bytes total or None when unknown)
BundleProgress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class ExportTarget:
    """What ``nimctl bundle export MODEL`` carries: the model source and its manifest, if any."""

    source: ModelSource
    manifest: Path | None


def export_target(model: str) -> ExportTarget:
    """MODEL as ``nimctl run`` resolves it: a manifest name or path, ``hf://ORG/NAME[@REV]`` or
    ``builtin://NAME``. No profile is selected: the exporting machine need not be able to run it."""
    from nimctl.store.target import resolve_source

    manifest, source = resolve_source(model)
    if source.kind == "local":
        raise UsageError(
            f"{model} is a local folder, not a model in the cache: there is nothing to export",
            hint="copy the folder itself; bundle export takes a manifest name, hf://ORG/NAME or builtin://NAME",
        )
    return ExportTarget(source, manifest.path if manifest is not None else None)


@dataclass(frozen=True)
class ExportResult:
    file: Path
    size_bytes: int
    info: dict[str, Any]
    members: int
    model_bytes: int
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "size_bytes": self.size_bytes,
            "model": self.info["model"],
            "repo": self.info.get("repo"),
            "commit": self.info.get("commit"),
            "revision": self.info.get("revision"),
            "manifest": self.info.get("manifest"),
            "image": self.info.get("image"),
            "members": self.members,
            "model_bytes": self.model_bytes,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def export_bundle(
    target: ExportTarget,
    cache: Path,
    output: Path,
    *,
    image: str | None = None,
    on_progress: BundleProgress | None = None,
) -> ExportResult:
    """Write the bundle of ``target`` (from ``cache``) to ``output``; ``image`` None: no image.

    The archive is written as ``OUTPUT.partial`` and renamed at the end, so an interrupted
    export never leaves a file that looks whole.
    """
    started = time.monotonic()
    output = output.resolve()
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {output}: no folder {output.parent}")
    plan = export_plan(target.source, target.manifest, cache)
    plan.info["image"] = image
    client, saved = _open_image(image) if image else (None, None)
    info_data = (json.dumps(plan.info, indent=2) + "\n").encode()
    manifest_size = target.manifest.stat().st_size if target.manifest else 0
    image_estimate = int((saved.attrs.get("Size") or 0) if saved is not None else 0)
    progress = _Counter(
        "writing", on_progress, len(info_data) + manifest_size + plan.model_bytes + image_estimate
    )
    partial = output.with_name(output.name + ".partial")
    writer = None
    try:
        writer = archive_io.ArchiveWriter(partial, progress.add)
        writer.add_bytes(INFO_MEMBER, info_data)
        if target.manifest is not None:
            writer.add_file(MANIFEST_PREFIX + target.manifest.name, target.manifest)
        for entry in plan.entries:
            if entry.link is not None:
                writer.add_link(entry.member, entry.link)
            else:
                assert entry.path is not None
                writer.add_file(entry.member, entry.path)
        if saved is not None:
            with _docker_errors(f"saving image {image}"):
                writer.add_stream(IMAGE_MEMBER, saved.save(chunk_size=archive_io.CHUNK, named=image))
        writer.finish()
        os.replace(partial, output)
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and (full := archive_io.disk_full(exc, output)):
            raise full from None
        raise
    finally:
        if client is not None:
            client.close()
    progress.done()
    return ExportResult(
        output, output.stat().st_size, plan.info, writer.members, plan.model_bytes, time.monotonic() - started
    )


class _Counter:
    def __init__(self, label: str, listener: BundleProgress | None, total: int | None) -> None:
        self.label, self.listener, self.total, self.done_bytes = label, listener, total, 0

    def add(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        if self.total is not None and self.done_bytes > self.total:
            self.total = self.done_bytes  # the image's size was an estimate
        if self.listener is not None:
            self.listener(self.label, self.done_bytes, self.total)

    def done(self) -> None:
        self.total = self.done_bytes
        self.add(0)


# -- the server image --------------------------------------------------------------------------


def _open_image(tag: str) -> tuple[DockerClient, Image]:
    from docker.errors import ImageNotFound

    from nimctl.runtime.docker_client import connect

    client = connect(timeout=SAVE_READ_TIMEOUT_S)
    try:
        return client, client.images.get(tag)
    except ImageNotFound:
        client.close()
        raise UsageError(
            f"image {tag} is not in this machine's Docker image store",
            hint="build it (nimctl build), name another with --image TAG, or leave it out with --no-image",
        ) from None


class _docker_errors:  # noqa: N801 - a `with` statement, as contextlib's helpers
    """The SDK's failures in the middle of a save or load, as nimctl's errors."""

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        from docker.errors import APIError, DockerException, ImageLoadError

        from nimctl.errors import RuntimeFailure
        from nimctl.runtime.docker_client import unavailable

        if isinstance(exc, APIError | ImageLoadError):
            text = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
            raise RuntimeFailure(f"Docker failed while {self.doing}: {text[0] if text else exc!r}") from None
        from requests.exceptions import RequestException

        if isinstance(exc, DockerException | RequestException):  # the daemon went away
            raise unavailable(exc) from None
        return False


# -- import ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    archive: Path
    cache: Path
    info: dict[str, Any]
    folder: Path  # the snapshot (hf) or model folder (builtin) now in the cache
    files: int
    size_bytes: int
    image_loaded: bool
    manifest: Path | None
    elapsed_s: float

    @property
    def run_command(self) -> str:
        from nimctl.contract import host_cache_dir

        model = str(self.manifest) if self.manifest is not None else self.info["model"]
        where = "" if self.cache == host_cache_dir().expanduser().resolve() else f" --cache {self.cache}"
        return f"nimctl run {model} --offline{where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "archive": str(self.archive),
            "cache": str(self.cache),
            "model": self.info["model"],
            "repo": self.info.get("repo"),
            "commit": self.info.get("commit"),
            "refs": self.info.get("refs", []),
            "folder": str(self.folder),
            "files": self.files,
            "size_bytes": self.size_bytes,
            "image": self.info.get("image"),
            "image_loaded": self.image_loaded,
            "manifest": str(self.manifest) if self.manifest is not None else None,
            "run": self.run_command,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def import_bundle(
    archive: Path, cache: Path, *, load_image: bool = True, on_progress: BundleProgress | None = None
) -> ImportResult:
    """Check every member of ``archive``, then load its image (unless not ``load_image``) and
    put its model into ``cache``. Any failure before the moves leaves the cache as it was."""
    started = time.monotonic()
    if not archive.is_file():
        raise UsageError(f"no bundle at {archive}")
    archive = archive.resolve()
    cache = cache.expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    with _open_archive(archive) as tar:
        try:
            members = staged.scan(tar, archive)
            info = staged.read_info(tar, members, archive)
        except IntegrityError as exc:
            exc.hint = exc.hint or REFUSED_HINT
            raise
        names = {member.name for member in members}
        with_image = load_image and info.get("image") is not None and IMAGE_MEMBER in names
        _check_space(archive, cache, members, with_image)
        client = _open_client() if with_image else None
        # The pid in the name lets `cache prune` tell this running import from a killed one.
        scratch = Path(tempfile.mkdtemp(prefix=f"{layout.IMPORT_PREFIX}{os.getpid()}-", dir=cache))
        try:
            progress = _Counter("checking", on_progress, sum(m.size for m in members if m.isreg()))
            try:
                found = staged.extract(
                    tar, members, scratch, info, keep_image=with_image, on_bytes=progress.add
                )
                staged.verify(found, info, archive, scratch)
            except IntegrityError as exc:
                exc.hint = exc.hint or REFUSED_HINT
                raise
            progress.done()
            if client is not None:
                if on_progress is not None:
                    on_progress(f"loading image {info['image']}", 0, None)
                with (
                    _docker_errors(f"loading image {info['image']}"),
                    (scratch / IMAGE_MEMBER).open("rb") as data,
                ):
                    client.images.load(data)
            folder = staged.install(scratch, cache, info)
            manifest = staged.install_manifest(scratch, layout.manifests_dir(cache), info)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if client is not None:
                client.close()
    # The files the model is made of: a hub snapshot's entries (its blobs are the same bytes).
    served = CACHE_PREFIX + info["folder"] + ("/snapshots/" if info.get("kind") == "hf" else "/")
    return ImportResult(
        archive=archive,
        cache=cache,
        info=info,
        folder=folder,
        files=sum(name.startswith(served) for name in (*found.digests, *found.links)),
        size_bytes=sum(size for name, size in found.sizes.items() if name.startswith(CACHE_PREFIX)),
        image_loaded=client is not None,
        manifest=manifest,
        elapsed_s=time.monotonic() - started,
    )


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:")
    except tarfile.ReadError as exc:
        raise IntegrityError(
            f"{archive} is not a bundle (not a plain tar: {exc})",
            hint="give the FILE.tar `nimctl bundle export` wrote (uncompress a compressed copy first)",
        ) from None


def _open_client() -> DockerClient:
    from nimctl.runtime.docker_client import connect

    return connect(timeout=SAVE_READ_TIMEOUT_S)


def _check_space(archive: Path, cache: Path, members: list[tarfile.TarInfo], with_image: bool) -> None:
    from nimctl.store.pull import DISK_MARGIN_BYTES

    needed = sum(m.size for m in members if m.isreg() and (with_image or m.name != IMAGE_MEMBER))
    free = shutil.disk_usage(cache).free
    if needed + DISK_MARGIN_BYTES > free:
        raise DiskFullError(
            f"importing {archive.name} needs {needed / 1e9:.1f} GB under {cache}, which has "
            f"{free / 1e9:.1f} GB free",
            hint="free space (nimctl cache prune), import into another --cache, or use --no-image",
        )
