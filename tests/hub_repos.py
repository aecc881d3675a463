"""What the hub emulation serves: repositories, commits and files, hashed as the hub hashes them.

A file at or above the LFS threshold (or any ``*.safetensors``) is an LFS file: its etag is the sha256 of its
content, and git holds a pointer file in its place. Smaller files are plain git blobs: their etag is the git
blob id. (tests/hub_emulation.py serves these.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

LFS_THRESHOLD = 1024
# Files up to this size are copied into memory by add_revision, so a test that edits its folder afterwards (to
# make the next revision) does not change what the earlier revision serves. Bigger files are served from disk
# with sendfile and must stay as they were (checked before each GET).
IN_MEMORY_LIMIT = 64 * 1024 * 1024


def tiny_vlm_folder(cache: Path) -> Path:
    """The built-in tiny VLM's files (generated under ``cache/builtin`` the first time, ~20-60 s, needs torch)."""
    from nimctl.models.builtin import ensure_builtin

    return ensure_builtin("tiny-vlm", Path(cache) / "builtin")


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a blob with this content (what the hub calls ``oid``/``blobId``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    path: str
    size: int
    sha256: str
    git_oid: str  # the git blob id: of the content, or of the LFS pointer for LFS files
    lfs: bool
    pointer_size: int
    data: bytes | None  # the content, when small enough to keep
    source: Path | None  # otherwise the file on disk
    mtime_ns: int


@dataclass(frozen=True)
class Commit:
    sha: str
    files: dict[str, Blob]
    last_modified: str


@dataclass
class Repo:
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


def read_blob(path: str, file: Path, lfs_threshold: int) -> Blob:
    stat = file.stat()
    data = file.read_bytes() if stat.st_size <= IN_MEMORY_LIMIT else None
    if data is not None:
        digest = hashlib.sha256(data).hexdigest()
    else:
        with file.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    lfs = stat.st_size >= lfs_threshold or path.endswith(".safetensors")
    if lfs:  # git holds a pointer file in its place
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {stat.st_size}\n"
        oid, pointer_size = git_blob_sha1(pointer.encode()), len(pointer)
    else:
        assert data is not None  # a regular git file is below the LFS threshold, so it was read whole
        oid, pointer_size = git_blob_sha1(data), 0
    source = None if data is not None else file
    return Blob(path, stat.st_size, digest, oid, lfs, pointer_size, data, source, stat.st_mtime_ns)
