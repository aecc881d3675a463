"""The steps of :func:`nimctl.store.bundle.import_bundle`: scan the headers, extract and hash every
member into a scratch folder inside the target cache, compare with ``SHA256SUMS``, then move the
model into place, one rename per folder, so that ``nimctl run`` never finds half a model.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nimctl.errors import IntegrityError
from nimctl.store import _bundle_archive as archive_io
from nimctl.store._bundle_archive import (
    CACHE_PREFIX,
    FORMAT_VERSION,
    IMAGE_MEMBER,
    INFO_MEMBER,
    MANIFEST_PREFIX,
)

# tarfile's ways of saying the data ends early or a header is garbage.
_DAMAGED = (tarfile.ReadError, tarfile.StreamError, EOFError)


@dataclass
class Found:
    """What the archive holds: each regular member's sha256 and size, each symlink's target."""

    digests: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    sums: dict[str, str] | None = None
    last: str = ""


def scan(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Every member's header (the data is skipped, so this is quick); a cut archive is refused here."""
    try:
        members = tar.getmembers()
    except _DAMAGED as exc:
        last = tar.members[-1].name if tar.members else None
        where = f"in member {last}" if last else "at its start"
        raise IntegrityError(f"{archive} is truncated or damaged {where} ({exc})") from None
    if not members:
        raise IntegrityError(f"{archive} is empty: not a bundle")
    return members


def read_info(tar: tarfile.TarFile, members: list[tarfile.TarInfo], archive: Path) -> dict[str, Any]:
    """``bundle.json``, the first member (its checksum is compared later, with all the others)."""
    first = members[0]
    if first.name != INFO_MEMBER or not first.isreg():
        raise IntegrityError(
            f"{archive} is not a nimctl bundle: its first member is {first.name}, not {INFO_MEMBER}"
        )
    try:
        info = json.loads(archive_io.read_small(tar, first))
    except (*_DAMAGED, ValueError) as exc:
        raise IntegrityError(f"member {INFO_MEMBER} of {archive} is damaged ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_VERSION:
        version = info.get("format") if isinstance(info, dict) else None
        raise IntegrityError(
            f"{archive} is a bundle of format {version!r}; this nimctl reads format {FORMAT_VERSION}",
            hint="import it with the nimctl version that exported it (bundle.json names it)",
        )
    folder = info.get("folder")
    if not isinstance(folder, str) or not folder or not isinstance(info.get("links"), dict):
        raise IntegrityError(f"member {INFO_MEMBER} of {archive} is damaged (no model folder)")
    archive_io.check_name(CACHE_PREFIX + folder)
    return info


def extract(
    tar: tarfile.TarFile,
    members: list[tarfile.TarInfo],
    scratch: Path,
    info: dict[str, Any],
    *,
    keep_image: bool,
    on_bytes: archive_io.ByteCounter,
) -> Found:
    """Every member into ``scratch`` (the image only when ``keep_image``), hashed on the way."""
    found = Found()
    folder = CACHE_PREFIX + info["folder"]
    manifest = MANIFEST_PREFIX + info["manifest"] if info.get("manifest") else None
    seen: set[str] = set()
    for member in members:
        name = archive_io.check_name(member.name)
        if name in seen:
            raise IntegrityError(f"member {name} appears twice in the archive: refused")
        seen.add(name)
        in_model = name.startswith(folder + "/")
        if not (in_model or name in (INFO_MEMBER, archive_io.SUMS_MEMBER, IMAGE_MEMBER, manifest)):
            raise IntegrityError(f"member {name} does not belong in a bundle of {info.get('model')}: refused")
        try:
            if member.issym() and in_model:
                archive_io.check_link(name, member.linkname, folder)
                (scratch / name).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, scratch / name)
                found.links[name] = member.linkname
            elif member.isdir() and in_model:
                (scratch / name).mkdir(parents=True, exist_ok=True)
            elif not member.isreg():
                raise IntegrityError(
                    f"member {name} is not a plain file: bundles hold files and symlinks only"
                )
            elif name == archive_io.SUMS_MEMBER:
                data = archive_io.read_small(tar, member)
                found.sums = archive_io.parse_sums(data)
            else:
                keep = in_model or name == manifest or (name == IMAGE_MEMBER and keep_image)
                target = scratch / name if keep else None
                found.digests[name] = archive_io.extract_hashed(tar, member, target, on_bytes)
                found.sizes[name] = member.size
        except _DAMAGED as exc:
            raise IntegrityError(f"the archive is truncated or damaged in member {name} ({exc})") from None
        found.last = name
    return found


def verify(found: Found, info: dict[str, Any], archive: Path) -> None:
    """Every checksum, every listed member present and nothing extra, the symlinks as recorded."""
    if found.sums is None:
        raise IntegrityError(
            f"{archive} is truncated: it ends after member {found.last}, and its checksum list "
            f"{archive_io.SUMS_MEMBER} (the last member) is missing"
        )
    for name, digest in found.digests.items():
        expected = found.sums.get(name)
        if expected is None:
            raise IntegrityError(f"member {name} is not in {archive_io.SUMS_MEMBER}: refused")
        if expected != digest:
            raise IntegrityError(
                f"member {name}{_known_as(name, found.links)} is corrupt: its sha256 is {digest[:16]}..., "
                f"{archive_io.SUMS_MEMBER} says {expected[:16]}..."
            )
    if missing := sorted(set(found.sums) - set(found.digests)):
        raise IntegrityError(f"member {missing[0]} is listed in {archive_io.SUMS_MEMBER} but missing")
    recorded = info["links"]
    for name in sorted(set(recorded) | set(found.links)):
        if recorded.get(name) != found.links.get(name):
            raise IntegrityError(f"symlink {name} does not match {INFO_MEMBER}: refused")
    if (info.get("image") is not None) != (IMAGE_MEMBER in found.digests):
        raise IntegrityError(f"member {IMAGE_MEMBER} does not match {INFO_MEMBER}'s image: refused")


def _known_as(blob: str, links: dict[str, str]) -> str:
    """`` (model.safetensors)`` for a blob a snapshot file links to: the name people know."""
    for link, target in links.items():
        if "/snapshots/" in link and os.path.normpath(os.path.join(os.path.dirname(link), target)) == blob:
            return f" ({link.split('/snapshots/', 1)[1].split('/', 1)[-1]})"
    return ""


def install(scratch: Path, cache: Path, info: dict[str, Any]) -> Path:
    """Move the checked model from ``scratch`` into ``cache``; the folder ``run`` will read."""
    staged = scratch / CACHE_PREFIX / info["folder"]
    target = cache / info["folder"]
    if info.get("kind") != "hf":
        _swap_in(staged, target, scratch)
        return target
    commit = info["commit"]
    # Blobs and the file list first: a snapshot's symlinks must never dangle.
    for sub in ("blobs", "trees"):
        if (staged / sub).is_dir():
            (target / sub).mkdir(parents=True, exist_ok=True)
            for item in sorted((staged / sub).iterdir()):
                os.replace(item, target / sub / item.name)
    _swap_in(staged / "snapshots" / commit, target / "snapshots" / commit, scratch)
    # The refs last: a branch moves to the imported commit only once its snapshot is whole.
    refs = staged / "refs"
    for ref in sorted(path for path in refs.rglob("*") if path.is_file()) if refs.is_dir() else []:
        dest = target / "refs" / ref.relative_to(refs)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(ref, dest)
    return target / "snapshots" / commit


def install_manifest(scratch: Path, folder: Path, info: dict[str, Any]) -> Path | None:
    if not info.get("manifest"):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / info["manifest"]
    os.replace(scratch / MANIFEST_PREFIX / info["manifest"], dest)
    return dest


def _swap_in(new: Path, dest: Path, scratch: Path) -> None:
    """One rename puts ``new`` in place; a folder already there moves aside into ``scratch``
    first (also a rename; it is deleted with the scratch folder)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.rename(scratch / f"replaced-{dest.name}")
    new.rename(dest)
