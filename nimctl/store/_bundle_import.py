"""The steps of :func:`nimctl.store.bundle.import_bundle`: scan the headers, extract and hash every
member into a scratch folder inside the target cache, compare with ``SHA256SUMS``, then move the
model into place, one rename per folder, so that ``nimctl run`` never finds half a model.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nimctl.errors import IntegrityError
from nimctl.store import _bundle_archive as archive_io
from nimctl.store import layout
from nimctl.store._bundle_archive import (
    CACHE_PREFIX,
    FORMAT_VERSION,
    IMAGE_MEMBER,
    INFO_MEMBER,
    MANIFEST_PREFIX,
)

# tarfile's ways of saying the data ends early or a header is garbage.
_DAMAGED = (tarfile.ReadError, tarfile.StreamError, EOFError)

# bundle.json is written by whoever made the archive (and SHA256SUMS too, so checksums prove
# nothing about intent): every name it holds that becomes a path is checked against these.
_PLAIN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO = re.compile(rf"{_PLAIN}/{_PLAIN}")
_NAME = re.compile(_PLAIN)
_REVISION = re.compile(r"[A-Za-z0-9._/-]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_MANIFEST = re.compile(rf"{_PLAIN}\.yaml")


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
    if not isinstance(info.get("links"), dict):
        raise IntegrityError(f"member {INFO_MEMBER} of {archive} is damaged (no symlink list)")
    _check_model(info, {member.name for member in members}, archive)
    return info


def _check_model(info: dict[str, Any], names: set[str], archive: Path) -> None:
    """The model ``bundle.json`` names, and the folder, commit, refs and manifest it claims, must be
    the ones nimctl's own layout gives that model: these become paths in the cache."""

    def refuse(what: str) -> IntegrityError:
        return IntegrityError(f"member {INFO_MEMBER} of {archive} is refused: {what}")

    kind, model, folder = info.get("kind"), info.get("model"), info.get("folder")
    if kind == "hf":
        repo = info.get("repo")
        if not isinstance(repo, str) or not _REPO.fullmatch(repo) or ".." in repo or "--" in repo:
            raise refuse(f"repo {repo!r} is not a hub repository ORG/NAME")
        base, at, revision = model.partition("@") if isinstance(model, str) else ("", "", "")
        # The model is printed as the command to run: a revision of plain ref characters only.
        if base != f"hf://{repo}" or (at and not _REVISION.fullmatch(revision)):
            raise refuse(f"model {model!r} is not hf://{repo}[@REVISION]")
        expected = _relative(layout.repo_dir(Path("/"), repo))
    elif kind == "builtin":
        name = info.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
            raise refuse(f"built-in model name {name!r} is not a plain name")
        if model != f"builtin://{name}":
            raise refuse(f"model {model!r} is not builtin://{name}")
        expected = _relative(layout.builtin_dir(Path("/")) / name)
    else:
        raise refuse(f"kind {kind!r} is neither hf nor builtin")
    if folder != expected:
        raise refuse(f"folder {folder!r} is not {model}'s folder in a cache ({expected})")
    if kind == "hf":
        commit = info.get("commit")
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
            raise refuse(f"commit {commit!r} is not a 40-hex commit")
        snapshot = f"{CACHE_PREFIX}{folder}/snapshots/{commit}/"
        if not any(name.startswith(snapshot) for name in names):
            raise refuse(f"its commit {commit} has no snapshot in the archive ({snapshot})")
        refs = info.get("refs")
        if not isinstance(refs, list) or not all(_plain_ref(ref) for ref in refs):
            raise refuse(f"refs {refs!r} are not plain ref names")
    manifest = info.get("manifest")
    if manifest is not None and not (isinstance(manifest, str) and _MANIFEST.fullmatch(manifest)):
        raise refuse(f"manifest {manifest!r} is not a bare NAME.yaml")


def _relative(path: Path) -> str:
    """``path`` (under a stand-in cache at ``/``) relative to the cache, as bundle.json writes it."""
    return path.relative_to("/").as_posix()


def _plain_ref(ref: object) -> bool:
    """A branch or tag name as the hub cache stores it: relative, slash-separated, no ``.``/``..``."""
    if not isinstance(ref, str) or not ref or ref.startswith("/") or "\\" in ref or "\0" in ref:
        return False
    return all(part and part not in (".", "..") for part in ref.split("/"))


def extract(
    tar: tarfile.TarFile,
    members: list[tarfile.TarInfo],
    scratch: Path,
    info: dict[str, Any],
    *,
    keep_image: bool,
    on_bytes: archive_io.ByteCounter,
) -> Found:
    """Every member into ``scratch`` (the image only when ``keep_image``), hashed on the way.

    Nothing is ever written through a symlink: a member below an earlier symlink member is
    refused, and every path is resolved on disk (``realpath``) before it is created, because a
    link checked only as text can chain through another link out of the folder.
    """
    found = Found()
    folder = CACHE_PREFIX + info["folder"]
    manifest = MANIFEST_PREFIX + info["manifest"] if info.get("manifest") else None
    root = os.path.realpath(scratch)
    model_root = os.path.join(root, folder)
    seen: set[str] = set()
    for member in members:
        name = archive_io.check_name(member.name)
        if name in seen:
            raise IntegrityError(f"member {name} appears twice in the archive: refused")
        seen.add(name)
        in_model = name.startswith(folder + "/")
        if not (in_model or name in (INFO_MEMBER, archive_io.SUMS_MEMBER, IMAGE_MEMBER, manifest)):
            raise IntegrityError(f"member {name} does not belong in a bundle of {info.get('model')}: refused")
        if link := _link_above(name, found.links):
            raise IntegrityError(f"member {name} lies below the symlink {link}: refused")
        within = model_root if in_model else root
        try:
            if member.issym() and in_model:
                archive_io.check_link(name, member.linkname, folder)
                path = _landing(root, name, within)
                if not _inside(os.path.realpath(os.path.join(path.parent, member.linkname)), model_root):
                    raise IntegrityError(
                        f"member {name} links to {member.linkname!r}, outside the model's folder: refused"
                    )
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, path)
                found.links[name] = member.linkname
            elif member.isdir() and in_model:
                _landing(root, name, within).mkdir(parents=True, exist_ok=True)
            elif not member.isreg():
                raise IntegrityError(
                    f"member {name} is not a plain file: bundles hold files and symlinks only"
                )
            elif name == archive_io.SUMS_MEMBER:
                data = archive_io.read_small(tar, member)
                found.sums = archive_io.parse_sums(data)
            else:
                keep = in_model or name == manifest or (name == IMAGE_MEMBER and keep_image)
                target = _landing(root, name, within) if keep else None
                found.digests[name] = archive_io.extract_hashed(tar, member, target, on_bytes)
                found.sizes[name] = member.size
        except _DAMAGED as exc:
            raise IntegrityError(f"the archive is truncated or damaged in member {name} ({exc})") from None
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
            why = exc.strerror
            raise IntegrityError(f"member {name} collides with another member ({why}): refused") from None
        found.last = name
    # A link that resolved inside when it was made can point elsewhere once a later link exists
    # on its way; the model is moved into the cache only if every link resolves inside it now.
    for name, target in found.links.items():
        if not _inside(os.path.realpath(os.path.join(root, name)), model_root):
            raise IntegrityError(f"member {name} links to {target!r}, outside the model's folder: refused")
    return found


def _link_above(name: str, links: dict[str, str]) -> str | None:
    """The symlink member among ``name``'s ancestors, if any."""
    parts = name.split("/")
    return next((up for i in range(1, len(parts)) if (up := "/".join(parts[:i])) in links), None)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _landing(root: str, name: str, within: str) -> Path:
    """Where member ``name`` is written under ``root``, once its resolved path is known to stay
    in ``within`` (the model's folder, or the scratch folder for the bundle's other members)."""
    path = os.path.join(root, name)
    if not _inside(os.path.realpath(path), within):
        raise IntegrityError(f"member {name} would be written outside the model's folder: refused")
    return Path(path)


def verify(found: Found, info: dict[str, Any], archive: Path, scratch: Path) -> None:
    """Every checksum, every listed member present and nothing extra, the symlinks as recorded,
    and (hub models) the refs those ``bundle.json`` lists, each naming the imported commit."""
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
    if info.get("kind") == "hf":
        _check_refs(found, info, scratch)


def _check_refs(found: Found, info: dict[str, Any], scratch: Path) -> None:
    """A ref moved into the cache points a branch at a snapshot: it must be a file naming the commit."""
    prefix = f"{CACHE_PREFIX}{info['folder']}/refs/"
    if link := next((name for name in found.links if name.startswith(prefix)), None):
        raise IntegrityError(f"member {link} is a symlink where a ref file belongs: refused")
    refs = {name.removeprefix(prefix): name for name in found.digests if name.startswith(prefix)}
    if sorted(refs) != sorted(info["refs"]):
        raise IntegrityError(f"the refs in the archive do not match {INFO_MEMBER}'s refs: refused")
    for name in refs.values():
        if (scratch / name).read_bytes().strip() != info["commit"].encode():
            raise IntegrityError(f"member {name} does not name the commit {info['commit']}: refused")


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
