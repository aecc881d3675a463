"""A local stand-in for the Hugging Face Hub, so tests can drive the real ``huggingface_hub`` client offline.

Point the client at it with ``HF_ENDPOINT`` (see the ``hf_env`` fixture in ``tests/conftest.py``). It answers
the routes huggingface_hub 2.4 uses for a model repository: ``/api/models/ORG/NAME[/revision/REV]``,
``/api/models/ORG/NAME/tree/REV[/PATH]`` and ``HEAD``/``GET /ORG/NAME/resolve/REV/PATH``, with the hub's headers
and error codes, so the client raises its own ``RepositoryNotFoundError``, ``RevisionNotFoundError`` and
``GatedRepoError``. Files are served straight from ``/resolve`` (no CDN redirect, no Xet headers): the client
accepts that and downloads over plain HTTP, with ``Range`` when it resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.hub_repos import LFS_THRESHOLD, Blob, Commit, Repo, read_blob

_CHUNK = 4 * 1024 * 1024
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


class _HubError(Exception):
    """An error answer, shaped like the hub's: status, ``X-Error-Code``, ``X-Error-Message``."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # snapshot_download opens 8 connections at once, a benchmark maybe more

    def __init__(self, hub: HubEmulation) -> None:
        self.hub = hub
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, which can hang for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx2 pools connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and small JSON bodies go out as separate writes: without this, Nagle + delayed ACK add ~40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is hub.requests(); stderr lines would only clutter test output

    def do_GET(self) -> None:
        self.server.hub._handle(self, head=False)

    def do_HEAD(self) -> None:
        self.server.hub._handle(self, head=True)


class HubEmulation:
    """A threaded HTTP server on 127.0.0.1 that answers like the Hugging Face Hub for model repositories."""

    lfs_threshold = LFS_THRESHOLD
    # Set by the ``hub`` fixture in tests/conftest.py: the commits of nimctl-test/tiny-vlm on "v1" and "main".
    tiny_vlm_v1: str
    tiny_vlm_main: str

    def __init__(self) -> None:
        self.url = ""
        self._lock = threading.Lock()
        self._repos: dict[str, Repo] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[tuple[str, str]] = []
        self._served: dict[tuple[str, str], int] = {}
        # Counted bytes belong to the reset they were asked for in: a response a test left stalled,
        # released when the test ends, must not count into the next test's figures.
        self._generation = 0
        self._tokens: dict[str, str] = {}
        self._fail: dict[tuple[str, str], list[int]] = {}  # [nbytes, times left]
        self._stall: dict[tuple[str, str], tuple[int, threading.Event]] = {}
        self._corrupt: set[tuple[str, str]] = set()
        self._declared: dict[tuple[str, str], int] = {}

    def add_revision(self, repo: str, folder: Path, *, refs: Sequence[str] = ("main",)) -> str:
        """Commit every file under ``folder`` (except ``.git/``) to ``repo``, point ``refs`` at it; the hash."""
        folder = Path(folder)
        files = {}
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            path = file.relative_to(folder).as_posix()
            if path.split("/")[0] != ".git":
                files[path] = read_blob(path, file, self.lfs_threshold)
        listing = "".join(f"{p}\0{b.sha256}\n" for p, b in sorted(files.items()))
        sha = hashlib.sha1(f"{repo}\n{','.join(refs)}\n{listing}".encode()).hexdigest()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self._lock:
            entry = self._repos.setdefault(repo, Repo())
            entry.commits.setdefault(sha, Commit(sha, files, stamp))
            for ref in refs:
                entry.refs[ref] = sha
        return sha

    def start(self) -> str:
        if self._server is None:
            self._server = _Server(self)
            self.url = f"http://127.0.0.1:{self._server.server_port}"
            self._thread = threading.Thread(target=self._server.serve_forever, name="hub", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        self.reset_faults()  # releases stalled responses, so their threads end
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> HubEmulation:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def bytes_served(self, repo: str, path: str) -> int:
        """Body bytes sent for that file, over all GETs and revisions (partial bodies included)."""
        with self._lock:
            return self._served.get((repo, path), 0)

    def requests(self) -> list[tuple[str, str]]:
        """(method, URL path without query, percent-decoded), in arrival order."""
        with self._lock:
            return list(self._requests)

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._served.clear()
            self._generation += 1

    def require_token(self, repo: str, token: str) -> None:
        """Gate ``repo``: files answer 401 (no token) or 403 (other token) with ``GatedRepo``.

        As on the hub, model info and the tree stay readable (``gated: "manual"``); only /resolve is refused.
        """
        with self._lock:
            self._tokens[repo] = token

    def fail_after(self, repo: str, path: str, nbytes: int, *, times: int = 1) -> None:
        """Cut the connection after ``nbytes`` of the response body, for the next ``times`` GETs of that file.

        huggingface_hub 2.4 retries a cut body itself (5 times, 1 s apart), resuming with ``Range`` from what it
        has written, which goes in 10 MiB chunks: a cut below 10 MiB makes it start over at 0.
        """
        with self._lock:
            self._fail[(repo, path)] = [nbytes, times]

    def stall_after(self, repo: str, path: str, nbytes: int) -> threading.Event:
        """The next GET of that file sends ``nbytes`` of its body, then waits for the event (then finishes).

        The client's read timeout (``HF_HUB_DOWNLOAD_TIMEOUT``, 10 s by default) still runs meanwhile.
        """
        event = threading.Event()
        with self._lock:
            self._stall[(repo, path)] = (nbytes, event)
        return event

    def corrupt(self, repo: str, path: str) -> None:
        """Serve that file with its last byte flipped: right size, wrong hash."""
        with self._lock:
            self._corrupt.add((repo, path))

    def declare_size(self, repo: str, path: str, size: int) -> None:
        """Advertise ``size`` for that file in model info and the tree (not in /resolve headers)."""
        with self._lock:
            self._declared[(repo, path)] = size

    def reset_faults(self) -> None:
        """Undo every fault above; stalled responses are released."""
        with self._lock:
            for _, event in self._stall.values():
                event.set()
            for faults in (self._tokens, self._fail, self._stall, self._corrupt, self._declared):
                faults.clear()

    def _handle(self, h: _Handler, *, head: bool) -> None:
        split = urlsplit(h.path)
        # Split before decoding: the client percent-encodes "/" inside a revision or tree path as %2F.
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        with self._lock:
            self._requests.append((h.command, unquote(split.path)))
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo, rest = f"{parts[2]}/{parts[3]}", parts[4:]
                if not rest:
                    self._model_info(h, repo, "main", query, head)
                elif rest[0] == "revision" and len(rest) >= 2:
                    self._model_info(h, repo, "/".join(rest[1:]), query, head)
                elif rest[0] == "tree" and len(rest) >= 2:
                    self._tree(h, repo, rest[1], "/".join(rest[2:]).strip("/"), query, head)
                else:
                    raise _HubError(404, None, "Not Found")
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve_file(h, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
            else:
                raise _HubError(404, None, "Not Found")
        except _HubError as e:
            code = {"X-Error-Code": e.code} if e.code else {}
            _send_json(
                h, e.status, {"error": e.message}, head, **{"X-Error-Message": e.message, **code, **e.headers}
            )
        except OSError:
            h.close_connection = True  # the client went away mid-response

    def _commit(self, repo: str, revision: str) -> Commit:
        with self._lock:
            entry = self._repos.get(repo)
            if entry is None:
                raise _HubError(401, "RepoNotFound", "Repository not found")
            sha = entry.refs.get(revision, revision)
            commit = entry.commits.get(sha) if _COMMIT_RE.fullmatch(sha) else None
        if commit is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _file_entry(self, repo: str, blob: Blob, *, tree: bool) -> dict[str, Any]:
        """A file as the tree lists it, or as a model info sibling with ``blobs=true``."""
        size = self._declared.get((repo, blob.path), blob.size)
        entry: dict[str, Any] = (
            {"type": "file", "oid": blob.git_oid, "size": size, "path": blob.path}
            if tree
            else {"rfilename": blob.path, "size": size, "blobId": blob.git_oid}
        )
        if blob.lfs:
            entry["lfs"] = {
                "oid" if tree else "sha256": blob.sha256,
                "size": size,
                "pointerSize": blob.pointer_size,
            }
        return entry

    def _model_info(self, h: _Handler, repo: str, revision: str, query: dict[str, str], head: bool) -> None:
        commit = self._commit(repo, revision)
        blobs = query.get("blobs", "").lower() == "true"
        siblings = [
            self._file_entry(repo, b, tree=False) if blobs else {"rfilename": b.path}
            for b in commit.files.values()
        ]
        info = {
            "id": repo,
            "author": repo.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.last_modified,
            "private": False,
            "gated": "manual" if repo in self._tokens else False,
            "disabled": False,
            "tags": [],
            "library_name": "transformers",
            "siblings": siblings,
            "usedStorage": sum(self._declared.get((repo, b.path), b.size) for b in commit.files.values()),
        }
        _send_json(h, 200, info, head)

    def _tree(self, h: _Handler, repo: str, rev: str, base: str, query: dict[str, str], head: bool) -> None:
        commit = self._commit(repo, rev)
        recursive = query.get("recursive", "").lower() == "true"
        prefix = f"{base}/" if base else ""
        folders: set[str] = set()
        files: list[Blob] = []
        for path, blob in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            dirs = path[len(prefix) :].split("/")[:-1]
            for depth in range(1, (len(dirs) if recursive else min(len(dirs), 1)) + 1):
                folders.add(prefix + "/".join(dirs[:depth]))
            if recursive or not dirs:
                files.append(blob)
        if base and not files and not folders:
            raise _HubError(404, "EntryNotFound", f"{base} does not exist on {rev}")
        # As on the hub, folders come too (recursive or not); their oid is made up but stable.
        entries = [
            {
                "type": "directory",
                "oid": hashlib.sha1(f"{commit.sha}/{d}".encode()).hexdigest(),
                "size": 0,
                "path": d,
            }
            for d in sorted(folders)
        ]
        entries += [self._file_entry(repo, blob, tree=True) for blob in files]
        _send_json(h, 200, entries, head)

    def _resolve_file(self, h: _Handler, repo: str, rev: str, path: str, head: bool) -> None:
        with self._lock:
            known, token = repo in self._repos, self._tokens.get(repo)
        if known and token is not None and h.headers.get("Authorization") != f"Bearer {token}":
            status = 401 if h.headers.get("Authorization") is None else 403
            raise _HubError(
                status, "GatedRepo", f"Access to model {repo} is restricted. You must have access to it."
            )
        commit = self._commit(repo, rev)
        blob = commit.files.get(path)
        if blob is None:
            raise _HubError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
        if blob.source is not None:
            stat = blob.source.stat()
            if (stat.st_size, stat.st_mtime_ns) != (blob.size, blob.mtime_ns):
                raise _HubError(500, None, f"{blob.source} changed after add_revision")
        etag = f'"{blob.sha256}"' if blob.lfs else f'"{blob.git_oid}"'
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "X-Repo-Commit": commit.sha,
        }
        if blob.lfs:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(blob.size)})
        start, end, status = 0, blob.size, 200
        if (wanted := h.headers.get("Range")) is not None:
            match = _RANGE_RE.fullmatch(wanted.strip())
            first, last = match.groups() if match else ("", "")
            if first:
                start, end = int(first), min(int(last) + 1 if last else blob.size, blob.size)
            elif last:
                start = max(blob.size - int(last), 0)  # "bytes=-N": the last N bytes
            if start >= end or not (first or last):
                raise _HubError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{blob.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        headers["Content-Length"] = str(end - start)
        _send_head(h, status, headers)
        if not head:
            self._send_body(h, repo, blob, start, end)

    def _send_body(self, h: _Handler, repo: str, blob: Blob, start: int, end: int) -> None:
        key = (repo, blob.path)
        with self._lock:
            cut: int | None = None
            if (fail := self._fail.get(key)) is not None:
                cut = fail[0]
                fail[1] -= 1
                if fail[1] <= 0:
                    del self._fail[key]
            stall = self._stall.pop(key, None)
            corrupt = key in self._corrupt
            generation = self._generation
        limit = end if cut is None else min(end, start + cut)
        with blob.source.open("rb") if blob.source is not None else contextlib.nullcontext() as file:
            pos = start
            if stall is not None and start + stall[0] < limit:
                pos = self._send_range(h, key, blob, file, pos, start + stall[0], corrupt, generation)
                stall[1].wait()
            self._send_range(h, key, blob, file, pos, limit, corrupt, generation)
        if cut is not None:
            # Stop mid-body on purpose: the client sees the connection close before Content-Length bytes.
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)

    def _send_range(
        self,
        h: _Handler,
        key: tuple[str, str],
        blob: Blob,
        file: Any,
        pos: int,
        end: int,
        corrupt: bool,
        generation: int,
    ) -> int:
        """Send bytes [pos, end) of the file (last byte flipped if corrupt); returns end."""
        last = blob.size - 1
        while pos < end:
            stop = min(end, pos + _CHUNK)
            if corrupt and pos == last:
                byte = blob.data[last] if blob.data is not None else os.pread(file.fileno(), 1, last)[0]
                h.connection.sendall(bytes([byte ^ 0xFF]))
                sent = 1
            else:
                if corrupt and pos < last < stop:
                    stop = last
                if blob.data is not None:
                    h.connection.sendall(memoryview(blob.data)[pos:stop])
                    sent = stop - pos
                else:
                    sent = h.connection.sendfile(file, offset=pos, count=stop - pos)
            with self._lock:
                if generation == self._generation:
                    self._served[key] = self._served.get(key, 0) + sent
            pos += sent
            if sent == 0:
                raise ConnectionError("sendfile sent nothing")
        return end


def _send_head(h: _Handler, status: int, headers: dict[str, str]) -> None:
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name, value)
    h.end_headers()


def _send_json(h: _Handler, status: int, obj: object, head: bool, **headers: str) -> None:
    body = json.dumps(obj).encode()
    _send_head(h, status, {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers})
    if not head:
        h.wfile.write(body)
