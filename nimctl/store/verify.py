"""``nimctl cache verify``: every file of a cached model against the hashes the hub recorded.

huggingface_hub keeps, for each commit it fetched, the file list with each file's size, git
blob id and (for LFS files) sha256 (``trees/COMMIT.json``); a blob is also named by its etag.
A file is **missing** when the snapshot lacks it (or links to nothing), **truncated** when it is
shorter than recorded, and **corrupt** when its size or hash differ otherwise. Nothing is fetched.
Built-in models have no recorded hashes: their files are only checked to be there and readable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nimctl.store import layout
from nimctl.store.inventory import CachedModel
from nimctl.store.pull import read_tree

Problem = Literal["missing", "truncated", "corrupt"]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileProblem:
    path: str  # relative to the snapshot
    problem: Problem
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "problem": self.problem, "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    uri: str
    commit: str | None
    checked: int  # files hashed
    problems: tuple[FileProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.uri,
            "commit": self.commit,
            "ok": self.ok,
            "checked": self.checked,
            "problems": [problem.to_dict() for problem in self.problems],
        }


def verify_model(cache: Path, model: CachedModel) -> list[Verdict]:
    """One verdict per cached revision (one for a built-in model)."""
    if model.kind != "hf":
        return [_verify_plain(model)]
    repo = model.uri.removeprefix("hf://")
    return [_verify_revision(cache, repo, model.uri, rev.commit) for rev in model.revisions]


def _verify_revision(cache: Path, repo: str, uri: str, commit: str) -> Verdict:
    snapshot = layout.snapshot_dir(cache, repo, commit)
    recorded = read_tree(cache, repo, commit)
    if recorded is None:
        # No file list (a cache filled by an older client): a link's blob is named by its etag. A
        # plain file (a copied cache) has no recorded hash: it is only checked to be there.
        recorded = {
            str(path.relative_to(snapshot)): {"blob_id": _etag_of(path)}
            for path in snapshot.rglob("*")
            if path.is_symlink() or path.is_file()
        }
    problems = []
    checked = 0
    for name, entry in sorted(recorded.items()):
        problem = _check_file(snapshot / name, entry)
        checked += 1
        if problem is not None:
            problems.append(FileProblem(name, *problem))
    return Verdict(uri, commit, checked, tuple(problems))


def _etag_of(path: Path) -> str | None:
    name = path.resolve().name
    is_hash = len(name) in (40, 64) and all(c in "0123456789abcdef" for c in name)
    return name if path.is_symlink() and is_hash else None


def _check_file(path: Path, entry: dict[str, Any]) -> tuple[Problem, str] | None:
    if not path.is_file():  # follows the link: a dangling one is missing too
        return "missing", "not in the snapshot" if not path.is_symlink() else "its blob is gone"
    size = path.stat().st_size
    expected_size = entry.get("lfs_size") or entry.get("size")
    if expected_size is not None and size < expected_size:
        return "truncated", f"{size} of {expected_size} bytes"
    if expected_size is not None and size != expected_size:
        return "corrupt", f"{size} bytes, {expected_size} recorded"
    sha256 = entry.get("lfs_sha256")
    if sha256:
        actual = _digest(path, hashlib.sha256())
        return None if actual == sha256 else ("corrupt", f"sha256 {actual[:12]}…, {sha256[:12]}… recorded")
    blob_id = entry.get("blob_id")
    if not blob_id:
        return None
    if len(blob_id) == 64:  # an LFS file without a file list: its blob is named by its sha256
        actual = _digest(path, hashlib.sha256())
    else:
        actual = _digest(path, hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False))
    return None if actual == blob_id else ("corrupt", f"hash {actual[:12]}…, {blob_id[:12]}… recorded")


def _digest(path: Path, digest: Any) -> str:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return str(digest.hexdigest())


def _verify_plain(model: CachedModel) -> Verdict:
    problems = []
    files = [path for path in model.folder.rglob("*") if path.is_file() or path.is_symlink()]
    for path in files:
        try:
            with path.open("rb") as handle:
                while handle.read(_CHUNK):
                    pass
        except OSError as exc:
            problems.append(FileProblem(str(path.relative_to(model.folder)), "missing", exc.strerror or ""))
    if not (model.folder / "config.json").is_file():
        problems.append(FileProblem("config.json", "missing", "a model folder needs one"))
    return Verdict(model.uri, None, len(files), tuple(problems))


def discard_bad_files(cache: Path, verdicts: list[Verdict]) -> list[Path]:
    """Delete the blobs of the truncated and corrupt files of hub models, so that the next pull
    fetches them again (huggingface_hub keeps any blob that exists); the paths deleted.

    A snapshot's file is a link to its blob, which other revisions may share: the blob goes, and
    every revision that links it reads as missing until the pull.
    """
    removed: list[Path] = []
    for verdict in verdicts:
        if verdict.commit is None:
            continue  # a built-in model: no recorded hashes, nothing to fetch it from
        snapshot = layout.snapshot_dir(cache, verdict.uri.removeprefix("hf://"), verdict.commit)
        for problem in verdict.problems:
            if problem.problem == "missing":
                continue
            blob = (snapshot / problem.path).resolve()
            if blob not in removed and blob.is_file():
                blob.unlink()
                removed.append(blob)
    return removed
