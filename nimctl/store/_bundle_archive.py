"""The tar plumbing of :mod:`nimctl.store.bundle`: writing members while hashing them, and reading
them back while hashing them, with every member name checked before anything touches the disk.

A bundle is a plain (uncompressed) tar: model files are compressed already, and a plain tar
is written and read at disk speed. Every regular member's sha256 goes to ``SHA256SUMS``, the
last member, so that a truncated archive always lacks it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import posixpath
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from nimctl.errors import DiskFullError, IntegrityError

FORMAT_VERSION = 1
INFO_MEMBER = "bundle.json"
MANIFEST_PREFIX = "manifest/"
CACHE_PREFIX = "cache/"  # + the model's folder relative to the cache root
IMAGE_MEMBER = "image.tar"
SUMS_MEMBER = "SHA256SUMS"
CHUNK = 1024 * 1024
# bundle.json and SHA256SUMS are read into memory: anything bigger is not one nimctl wrote.
SMALL_MEMBER_LIMIT = 16 * 1024 * 1024

ByteCounter = Callable[[int], None]


class _HashingReader:
    """A file read by tarfile's copy loop, hashed and counted on the way."""

    def __init__(self, source: IO[bytes], on_bytes: ByteCounter) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.on_bytes(len(data))
        return data


class ArchiveWriter:
    """Writes a bundle's members in order; :meth:`finish` adds ``SHA256SUMS`` and closes."""

    def __init__(self, path: Path, on_bytes: ByteCounter) -> None:
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK)  # noqa: SIM115 - closed by finish()
        self.on_bytes = on_bytes
        self.sums: dict[str, str] = {}
        self.members = 0

    def _info(self, name: str, *, kind: bytes = tarfile.REGTYPE, size: int = 0, mtime: float = 0) -> Any:
        info = tarfile.TarInfo(name)
        info.type, info.size = kind, size
        info.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
        info.mtime = int(mtime or time.time())
        # No user or group names: an archive carried elsewhere should not say who made it.
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        import io

        self.add_fileobj(name, io.BytesIO(data), len(data))

    def add_file(self, name: str, path: Path) -> None:
        with path.open("rb") as source:
            stat = path.stat()
            self.add_fileobj(name, source, stat.st_size, mtime=stat.st_mtime)

    def add_fileobj(self, name: str, source: IO[bytes], size: int, *, mtime: float = 0) -> None:
        reader = _HashingReader(source, self.on_bytes)
        self.tar.addfile(self._info(name, size=size, mtime=mtime), reader)  # type: ignore[arg-type]
        self.sums[name] = reader.digest.hexdigest()
        self.members += 1

    def add_link(self, name: str, target: str) -> None:
        info = self._info(name, kind=tarfile.SYMTYPE)
        info.linkname = target
        self.tar.addfile(info)
        self.members += 1

    def add_stream(self, name: str, chunks: Iterable[bytes]) -> int:
        """A member whose size is known only at its end (``docker save``): streamed, never held whole.

        The header is written first with size 0, then rewritten in place once the data is in.
        It is a GNU header, one block whatever the size (base-256 above 8 GiB), so the
        rewrite never moves the data; tar readers take mixed header formats member by member.
        """
        tar, out = self.tar, self.tar.fileobj
        assert out is not None
        start = tar.offset
        info = self._info(name)
        out.write(self._header(info))
        digest, size = hashlib.sha256(), 0
        for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            self.on_bytes(len(chunk))
        out.write(tarfile.NUL * (-size % tarfile.BLOCKSIZE))
        end = out.tell()
        info.size = size
        out.seek(start)
        out.write(self._header(info))
        out.seek(end)
        tar.offset = end
        self.sums[name] = digest.hexdigest()
        self.members += 1
        return size

    def _header(self, info: tarfile.TarInfo) -> bytes:
        header = info.tobuf(tarfile.GNU_FORMAT, self.tar.encoding, self.tar.errors)
        assert len(header) == tarfile.BLOCKSIZE, "a streamed member needs a short name"
        return header

    def finish(self) -> None:
        lines = "".join(f"{digest}  {name}\n" for name, digest in self.sums.items())
        data = lines.encode()
        self.tar.addfile(self._info(SUMS_MEMBER, size=len(data)), _BytesReader(data))  # type: ignore[arg-type]
        self.members += 1
        self.tar.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError, tarfile.TarError):
            self.tar.close()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        import io

        self.buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.buffer.read(size)


def parse_sums(data: bytes) -> dict[str, str]:
    """``SHA256SUMS`` as sha256sum writes it: ``HEX  NAME`` per line."""
    sums: dict[str, str] = {}
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise IntegrityError(f"{SUMS_MEMBER} is not text: the archive is damaged") from None
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or name in sums:
            raise IntegrityError(f"{SUMS_MEMBER} line {number} is damaged: {line[:80]!r}")
        sums[name] = digest.lower()
    return sums


def check_name(name: str) -> str:
    """A member name that stays inside the folder it is extracted to; IntegrityError otherwise."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or posixpath.normpath(name) != name
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise IntegrityError(f"member {name!r} would land outside the import folder: refused")
    return name


def check_link(name: str, target: str, inside: str) -> None:
    """A symlink must be relative and point inside ``inside`` (the model's folder in the archive)."""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if target.startswith("/") or not (resolved + "/").startswith(inside.rstrip("/") + "/"):
        raise IntegrityError(f"member {name!r} links to {target!r}, outside the model's folder: refused")


def copy_hashed(source: IO[bytes], dest: IO[bytes] | None, on_bytes: ByteCounter) -> str:
    """Copy a member's data (``dest`` None: only hash it); its sha256."""
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        if dest is not None:
            dest.write(chunk)
        on_bytes(len(chunk))
    return digest.hexdigest()


def disk_full(exc: OSError, where: Path) -> DiskFullError | None:
    """nimctl's error for a full disk (None for any other OSError)."""
    if exc.errno != errno.ENOSPC:
        return None
    return DiskFullError(
        f"the disk under {where.parent} filled up while writing {where.name}",
        hint="free space (nimctl cache prune) or write to another folder",
    )


def extract_hashed(
    tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path | None, on_bytes: ByteCounter
) -> str:
    """Write one regular member to ``path`` (None: hash only); its sha256. A full disk is DiskFullError."""
    source = tar.extractfile(member)
    assert source is not None
    try:
        if path is None:
            return copy_hashed(source, None, on_bytes)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as dest:
            return copy_hashed(source, dest, on_bytes)
    except OSError as exc:
        if (full := disk_full(exc, path)) is not None:
            raise full from None
        raise


def read_small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > SMALL_MEMBER_LIMIT:
        raise IntegrityError(f"member {member.name} is {member.size} bytes: not one nimctl wrote")
    source = tar.extractfile(member)
    assert source is not None
    return source.read()
