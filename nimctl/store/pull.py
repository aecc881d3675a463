"""Fetching a hub model into the cache, and checking a cache without the network.

Both ``nimctl pull`` (on the host) and ``nim-serve`` (at start-up, and its ``download-to-cache``)
call :func:`pull`; ``nimctl run --offline`` and ``NIM_DISABLE_MODEL_DOWNLOAD=1`` call
:func:`require_cached`. The download itself is huggingface_hub's ``snapshot_download``: its
cache layout, its retries with range requests within a download, its ``HF_TOKEN``. nimctl
adds the file list first (for the totals and the disk-space check), the progress, and errors
that say what to do.
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.errors import (
    DiskFullError,
    ModelUnavailableError,
    RequestRejectedError,
    ServerFailedError,
    ServerUnreachableError,
)
from nimctl.store import layout
from nimctl.store.progress import ProgressListener, ProgressTracker

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoFile

# Left free on the disk beyond the download itself (the engine's own caches, logs).
DISK_MARGIN_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class PullResult:
    uri: str  # hf://ORG/NAME or builtin://NAME
    repo: str
    revision: str | None  # what was asked for (a branch, tag or commit); None for a built-in model
    commit: str | None
    folder: Path  # the snapshot folder: what NIM_MODEL_PATH-style consumers read
    size_bytes: int  # the model's files, all of them
    files: int
    fetched_bytes: int  # what this pull had to fetch (0: it was all in the cache)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.uri,
            "repo": self.repo,
            "revision": self.revision,
            "commit": self.commit,
            "folder": str(self.folder),
            "size_bytes": self.size_bytes,
            "files": self.files,
            "fetched_bytes": self.fetched_bytes,
        }


def pull(
    repo: str,
    cache: Path,
    *,
    revision: str | None = None,
    on_progress: ProgressListener | None = None,
    token: str | None = None,
) -> PullResult:
    """Fetch every file of ``repo`` at ``revision`` (default ``main``) into ``cache``."""
    from huggingface_hub import HfApi, constants, snapshot_download

    revision = revision or "main"
    if constants.HF_HUB_OFFLINE:  # HF_HUB_OFFLINE=1: what the cache has, or an error naming what it lacks
        return cached_result(repo, cache, revision=revision)
    api = HfApi(token=token)
    with hub_errors(repo, revision, cache):
        info = api.repo_info(repo, revision=revision, repo_type="model")
        commit = info.sha
        assert commit, "the hub answered a repository without a commit"
        files = _files(api.list_repo_tree(repo, revision=commit, recursive=True))
    needed = _blobs_to_fetch(cache, repo, files)
    _check_space(cache, needed, repo)
    tracker = ProgressTracker(on_progress, bytes_total=needed, files_total=len(files))
    tracker.add(force=True)
    try:
        with hub_errors(repo, revision, cache):
            folder = snapshot_download(
                repo,
                revision=commit,
                cache_dir=layout.hub_dir(cache),
                token=token,
                tqdm_class=tracker.tqdm_class(),
            )
        tracker.add(force=True)
    finally:
        tracker.close()
    if revision != commit:
        _write_ref(cache, repo, revision, commit)
    return PullResult(
        uri=f"hf://{repo}",
        repo=repo,
        revision=revision,
        commit=commit,
        folder=Path(folder),
        size_bytes=sum(size for size, _ in files.values()),
        files=len(files),
        fetched_bytes=needed,
    )


def _blobs_to_fetch(cache: Path, repo: str, files: dict[str, tuple[int, str]]) -> int:
    """The bytes still to fetch: each blob (shared by revisions, named by its etag) counted once.

    huggingface_hub skips any blob that exists, whatever its size, so a blob of the wrong size (a
    truncated file ``cache verify`` found) is deleted here and fetched again.
    """
    blobs = layout.repo_dir(cache, repo) / "blobs"
    needed: dict[str, int] = {}
    for size, blob in files.values():
        path = blobs / blob
        try:
            if path.stat().st_size == size:
                continue
            path.unlink()
        except FileNotFoundError:
            pass
        needed[blob] = size
    return sum(needed.values())


def cached_result(repo: str, cache: Path, *, revision: str | None = None) -> PullResult:
    """What :func:`pull` would answer for a model the cache already holds whole (no network)."""
    folder = require_cached(repo, cache, revision=revision)
    files = {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    return PullResult(
        uri=f"hf://{repo}",
        repo=repo,
        revision=revision or "main",
        commit=folder.name,
        folder=folder,
        size_bytes=sum(files.values()),
        files=len(files),
        fetched_bytes=0,
    )


def require_cached(repo: str, cache: Path, *, revision: str | None = None) -> Path:
    """The snapshot folder of ``repo`` when every file is in the cache; never touches the network.

    Otherwise a ModelUnavailableError that names the missing files and how to get them.
    """
    revision = revision or "main"
    root = layout.repo_dir(cache, repo)
    commit = _cached_commit(root, revision)
    uri = f"hf://{repo}" + ("" if revision == "main" else f"@{revision}")
    get_it = (
        f"on a connected machine run `nimctl pull {uri}` (then `nimctl bundle export` and "
        "`nimctl bundle import` here), or drop --offline / NIM_DISABLE_MODEL_DOWNLOAD"
    )
    if commit is None or not layout.snapshot_dir(cache, repo, commit).is_dir():
        raise ModelUnavailableError(f"{uri} is not in the cache at {layout.hub_dir(cache)}", hint=get_it)
    snapshot = layout.snapshot_dir(cache, repo, commit)
    listing = read_tree(cache, repo, commit)
    if listing is None:
        return snapshot  # filled by an older client without a file list: what is there is all we know
    missing = sorted(path for path, entry in listing.items() if not _complete(snapshot / path, entry["size"]))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelUnavailableError(
            f"{uri} is incomplete in the cache: {len(missing)} of {len(listing)} files missing ({shown})",
            hint=get_it,
        )
    return snapshot


def read_tree(cache: Path, repo: str, commit: str) -> dict[str, dict[str, Any]] | None:
    """The file list huggingface_hub recorded for ``commit`` (path -> size, blob_id, lfs_sha256)."""
    import json

    try:
        data = json.loads(layout.tree_file(cache, repo, commit).read_text())
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, dict) else None


def _write_ref(cache: Path, repo: str, revision: str, commit: str) -> None:
    """``refs/REVISION``, as snapshot_download writes it for a branch or tag: the download was asked
    for by commit (resolved first, for the totals), so the name is recorded here. Written whole
    or not at all, since an offline run reads it."""
    import os
    import tempfile

    ref = layout.repo_dir(cache, repo) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=ref.parent, prefix=".ref-")
    with os.fdopen(handle, "w") as out:
        out.write(commit)
    os.replace(temporary, ref)


def _cached_commit(root: Path, revision: str) -> str | None:
    if (root / "snapshots" / revision).is_dir():
        return revision
    try:
        return (root / "refs" / revision).read_text().strip() or None
    except OSError:
        return None


def _files(entries: Any) -> dict[str, tuple[int, str]]:
    """path -> (size, the name of its blob in the cache: the LFS sha256, else the git blob id)."""
    from huggingface_hub.hf_api import RepoFile

    found: dict[str, tuple[int, str]] = {}
    for entry in entries:
        if isinstance(entry, RepoFile):
            file: RepoFile = entry
            if file.lfs is not None:
                found[file.path] = (file.lfs.size, file.lfs.sha256)
            else:
                found[file.path] = (file.size, file.blob_id)
    return found


def _complete(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def drop_partial(cache: Path, repo: str, *, since: float) -> int:
    """Delete the partial files of downloads started at or after ``since`` (a time.time()); their count.

    huggingface_hub 2.4 downloads each file into a temporary ``.incomplete`` file of a name of its
    own and never reuses one (its PR #4228), so a pull resumes file by file: finished files stay,
    a file cut off starts over. A process that leaves at once (Ctrl-C) drops its partial files here
    rather than leave them for ``cache prune``.
    """
    blobs = layout.repo_dir(cache, repo) / "blobs"
    dropped = 0
    for part in blobs.glob("*.incomplete") if blobs.is_dir() else ():
        try:
            if part.stat().st_mtime >= since - 1:
                part.unlink()
                dropped += 1
        except OSError:
            continue  # gone meanwhile
    return dropped


def _check_space(cache: Path, needed: int, repo: str) -> None:
    target = layout.hub_dir(cache)
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free
    if needed + DISK_MARGIN_BYTES > free:
        raise DiskFullError(
            f"hf://{repo} needs {needed / 1e9:.1f} GB more and {target} has {free / 1e9:.1f} GB free",
            hint="free space (nimctl cache prune, nimctl cache rm MODEL) or point NIM_CACHE_PATH elsewhere",
        )


class hub_errors:  # noqa: N801 - used as a `with` statement, like contextlib's helpers
    """Turns huggingface_hub's and the disk's failures into nimctl's one-line errors."""

    def __init__(self, repo: str, revision: str, cache: Path) -> None:
        self.repo, self.revision, self.cache = repo, revision, cache

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            return False
        translated = translate(exc, self.repo, self.revision, self.cache)
        if translated is None:
            return False
        raise translated from exc


def translate(exc: BaseException, repo: str, revision: str, cache: Path) -> Exception | None:
    """nimctl's error for a failure of the hub client or the disk, or None when it is not one."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    uri = f"hf://{repo}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DiskFullError(
            f"the disk under {layout.hub_dir(cache)} filled up while fetching {uri}",
            hint="free space (nimctl cache prune) and pull again: finished files stay, the rest resumes",
        )
    if isinstance(exc, GatedRepoError):
        return ModelUnavailableError(
            f"{uri} is gated: the hub wants an accepted licence and a token",
            hint="accept the model's terms on the hub, then set HF_TOKEN to a token of that account",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ModelUnavailableError(
            f"{uri} does not exist on {constants.ENDPOINT}, or is private to another account",
            hint="check the name (hf://ORG/NAME); for a private model set HF_TOKEN",
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelUnavailableError(
            f"{uri} has no revision {revision!r}",
            hint="use a branch, a tag or a full commit hash of the repository (default: main)",
        )
    import httpx2

    if isinstance(exc, httpx2.TransportError) and not isinstance(
        exc, httpx2.ConnectError | httpx2.ConnectTimeout
    ):
        return ServerUnreachableError(
            f"the connection to the hub at {constants.ENDPOINT} broke while fetching {uri} "
            f"({type(exc).__name__})",
            hint="pull again: the finished files stay and only the rest is fetched",
        )
    if isinstance(
        exc, (OfflineModeIsEnabled, LocalEntryNotFoundError, httpx2.ConnectError, httpx2.ConnectTimeout)
    ):
        if constants.HF_HUB_OFFLINE or isinstance(exc, OfflineModeIsEnabled):
            return ModelUnavailableError(
                f"{uri} is not in the cache and downloads are off (offline)",
                hint="pull it on a connected machine and carry it over with nimctl bundle export/import",
            )
        return ServerUnreachableError(
            f"cannot reach the hub at {constants.ENDPOINT} to fetch {uri}",
            hint="check the network (or HF_ENDPOINT); offline, use nimctl bundle import and run --offline",
        )
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        error = ServerFailedError if status >= 500 or not status else RequestRejectedError
        return error(
            f"fetching {uri} failed: the hub at {constants.ENDPOINT} answered HTTP {status or '?'}",
            status=status,
            hint="try again later"
            if error is ServerFailedError
            else "check the name, HF_TOKEN and HF_ENDPOINT",
        )
    return None
