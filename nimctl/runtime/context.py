"""The build contexts of an image, assembled from the source tree.

An image is built in two phases from one ``container/Dockerfile.<device>``: the **deps**
image (every stage before the last ``FROM``: OS packages and the Python environment) and
the **app** image (the last stage, ``FROM`` the deps image: manifests and nimctl's code).
Each phase gets its own context, holding only what it copies::

    deps: Dockerfile, os-packages.txt, wheels/ (requirements.txt, constraints.txt, the wheels
          for an offline build), src/pyproject.toml, src/README.md (a stub), src/nimctl/__init__.py
    app:  Dockerfile, profiles/*.yaml, src/nimctl/ (no caches, no build leftovers)

The deps image is tagged with a digest of its context, so it is rebuilt only when one of
its inputs changes, and a code change sends a context of a few hundred KiB instead of the
wheelhouse. Every entry gets the same owner and a fixed modification time, so that a fresh
clone or a touched-but-unchanged file does not invalidate Docker's layer cache.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nimctl.errors import UsageError
from nimctl.runtime.source import Device, requirements_text

# 2020-01-01: constant, and after 1980 so that anything zipping these files works.
FIXED_MTIME = 1577836800
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
WHEEL_SUFFIXES = (".whl", ".tar.gz", ".zip")


@dataclass(frozen=True)
class Entry:
    """One file of a context: from disk (``path``) or from memory (``data``)."""

    name: str
    path: Path | None = None
    data: bytes | None = None
    # Wheels are identified by name and size: hashing 900 MiB on every build would cost seconds.
    by_name: bool = False

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size  # type: ignore[union-attr]


@dataclass
class Context:
    entries: list[Entry] = field(default_factory=list)

    def add_file(self, path: Path, name: str, *, by_name: bool = False) -> None:
        self.entries.append(Entry(name, path=path, by_name=by_name))

    def add_bytes(self, data: bytes, name: str) -> None:
        self.entries.append(Entry(name, data=data))

    def add_tree(self, root: Path, prefix: str) -> None:
        for path in _walk(root):
            self.add_file(path, f"{prefix}/{path.relative_to(root).as_posix()}")

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def wheels(self) -> int:
        return sum(entry.by_name for entry in self.entries)

    def digest(self, *extra: str) -> str:
        """A digest of every entry (and of ``extra`` strings such as build arguments)."""
        digest = hashlib.sha256()
        for text in extra:
            digest.update(text.encode() + b"\0")
        for entry in sorted(self.entries, key=lambda e: e.name):
            digest.update(entry.name.encode() + b"\0")
            if entry.by_name:
                digest.update(str(entry.size).encode())
            elif entry.data is not None:
                digest.update(entry.data)
            else:
                digest.update(entry.path.read_bytes())  # type: ignore[union-attr]
            digest.update(b"\0")
        return digest.hexdigest()

    def write(self, target: Path) -> None:
        with tarfile.open(target, "w") as tar:
            for entry in self.entries:
                if entry.data is not None:
                    tar.addfile(_info(entry.name, len(entry.data), 0o644), io.BytesIO(entry.data))
                else:
                    assert entry.path is not None
                    stat = entry.path.stat()
                    with entry.path.open("rb") as handle:
                        tar.addfile(_info(entry.name, stat.st_size, stat.st_mode), handle)


def _info(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o755 if mode & 0o111 else 0o644
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in _SKIPPED_DIRS or part.endswith(_SKIPPED_SUFFIXES) for part in relative.parts):
            continue
        if path.is_file() and not path.is_symlink():
            yield path


def wheel_files(wheelhouse: Path) -> list[Path]:
    if not wheelhouse.is_dir():
        raise UsageError(
            f"wheelhouse not found: {wheelhouse}", hint="pass a folder of wheels (pip wheel -w DIR)"
        )
    wheels = sorted(p for p in wheelhouse.iterdir() if p.is_file() and p.name.endswith(WHEEL_SUFFIXES))
    # nimctl itself goes in from source, never from the wheelhouse.
    wheels = [p for p in wheels if not p.name.lower().startswith("nimctl-")]
    if not wheels:
        raise UsageError(
            f"wheelhouse {wheelhouse} holds no wheels", hint="fill it with scripts/build-images.sh"
        )
    return wheels


def split_dockerfile(text: str) -> tuple[str, str]:
    """(the deps part: every stage before the last FROM, the last stage without its FROM line)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    if len(starts) < 2:
        raise UsageError("a nimctl Dockerfile needs at least two stages (deps, then nimctl)")
    last = starts[-1]
    return "".join(lines[:last]), "".join(lines[last + 1 :])


def dockerfile_path(source: Path, device: Device) -> Path:
    path = source / "container" / f"Dockerfile.{device}"
    if not path.is_file():
        raise UsageError(f"no Dockerfile for device {device!r}: {path} is missing")
    return path


def deps_context(source: Path, device: Device, wheelhouse: Path | None) -> Context:
    deps_text, _ = split_dockerfile(dockerfile_path(source, device).read_text(encoding="utf-8"))
    context = Context()
    context.add_bytes(deps_text.encode(), "Dockerfile")
    context.add_file(source / "container" / "os-packages.txt", "os-packages.txt")
    context.add_bytes(requirements_text(source, device).encode(), "wheels/requirements.txt")
    constraints = source / "constraints.txt"
    if constraints.is_file():
        context.add_file(constraints, "wheels/constraints.txt")
    else:
        context.add_bytes(b"", "wheels/constraints.txt")
    for wheel in wheel_files(wheelhouse) if wheelhouse is not None else []:
        context.add_file(wheel, f"wheels/{wheel.name}", by_name=True)
    context.add_file(source / "pyproject.toml", "src/pyproject.toml")
    # pyproject.toml names a readme, which the build backend insists on; the real one would
    # rebuild the deps image on every documentation change.
    context.add_bytes(b"# nimctl\n", "src/README.md")
    context.add_file(source / "nimctl" / "__init__.py", "src/nimctl/__init__.py")
    return context


def app_context(source: Path, device: Device, deps_image: str) -> Context:
    _, app_text = split_dockerfile(dockerfile_path(source, device).read_text(encoding="utf-8"))
    context = Context()
    context.add_bytes(f"FROM {deps_image}\n{app_text}".encode(), "Dockerfile")
    profiles = source / "profiles"
    manifests = sorted(profiles.glob("*.y*ml")) if profiles.is_dir() else []
    for manifest in manifests:
        context.add_file(manifest, f"profiles/{manifest.name}")
    if not manifests:
        context.add_bytes(b"", "profiles/.keep")
    context.add_tree(source / "nimctl", "src/nimctl")
    return context
