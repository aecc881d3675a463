"""Instances as host processes (``--runtime local``), for machines without Docker.

Each instance has a state folder (``nimctl.runtime.paths.instances_dir()/NAME``) holding
``instance.json`` (what ``ps`` shows), ``server.log`` (everything the server printed) and,
once it has ended, ``exit_code``. ``nim-serve`` runs under a small launcher
(:mod:`nimctl.runtime.launcher`) in a new session, so it outlives ``nimctl run -d`` and
Ctrl-C in the terminal does not reach it unasked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from nimctl import contract
from nimctl.errors import RuntimeFailure, UsageError
from nimctl.runtime.base import Handle, InstanceRuntime
from nimctl.runtime.dry_run import local_run_line
from nimctl.runtime.group import local_members
from nimctl.runtime.instances import (
    STOP_TIMEOUT_S,
    Instance,
    Stopped,
    lines_of,
    name_in_use_error,
    parse_seconds,
    parse_time,
)
from nimctl.runtime.launcher import EXIT_CODE_FILE
from nimctl.runtime.paths import instances_dir
from nimctl.runtime.placement import HostPlacement
from nimctl.runtime.ports import check_port_free
from nimctl.runtime.processes import end_tree, pid_running, process_identity, process_tree
from nimctl.runtime.spec import RunSpec

if TYPE_CHECKING:
    from nimctl.runtime.images import BuildListener

INSTANCE_FILE = "instance.json"
LOG_FILE = "server.log"
_BLOCK = 64 * 1024
# After the launcher has ended: how long what is left of its tree gets to end by itself.
_LEFTOVER_GRACE_S = 2.0


def _serve_command() -> list[str]:
    """``nim-serve`` from this nimctl's own environment, so the server matches the CLI."""
    beside = Path(sys.executable).with_name("nim-serve")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("nim-serve")
    if found:
        return [found]
    return [sys.executable, "-m", "nimctl.server"]


class LocalHandle:
    """A local instance's state folder and process."""

    def __init__(self, folder: Path, record: dict[str, Any], process: subprocess.Popen[bytes] | None = None):
        self.folder = folder
        self.record = record
        self.process = process
        self.name = str(record["name"])
        self.url = str(record["url"])
        self.rank = int(record.get("rank") or 0)

    @property
    def pid(self) -> int:
        return int(self.record.get("pid") or 0)

    @property
    def pid_identity(self) -> str | None:
        value = self.record.get("pid_identity")
        return str(value) if value else None

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    def exit_code(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.folder / EXIT_CODE_FILE).read_text().strip())
        return None

    def state(self) -> tuple[str, int | None]:
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return "running", None
            return "exited", self.exit_code() if self.exit_code() is not None else code
        if self.pid and pid_running(self.pid, self.pid_identity):
            return "running", None
        return "exited", self.exit_code()

    def last_lines(self, count: int) -> list[str]:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(_tail_offset(handle, count))
                data = handle.read()
        except OSError:
            return []
        return data.decode("utf-8", "replace").splitlines()[-count:] if count else []

    def follow(self) -> Iterator[str]:
        """Lines as the server writes them from now on, until it has ended and all is read."""
        return self.read(tail=0, follow=True)

    def read(self, *, tail: int | None, follow: bool) -> Iterator[str]:
        """The whole log (or its last ``tail`` lines), streamed, then new lines when following."""
        try:
            handle = self.log_path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            handle.seek(0 if tail is None else _tail_offset(handle, tail))
            yield from lines_of(self._chunks(handle, follow=follow))

    def _chunks(self, handle: BinaryIO, *, follow: bool) -> Iterator[bytes]:
        while True:
            chunk = handle.read(_BLOCK)
            if chunk:
                yield chunk
            elif not follow:
                return
            elif self.state()[0] != "running":
                yield handle.read()  # what it wrote between the last read and its end
                return
            else:
                time.sleep(0.2)

    def close(self) -> None:
        """Nothing to let go of: the state folder is read afresh each time."""

    def to_instance(self) -> Instance:
        state, code = self.state()
        record = self.record
        return Instance(
            name=self.name,
            runtime="local",
            model=str(record.get("model", "?")),
            profile_id=record.get("profile_id"),
            profile_name=record.get("profile_name"),
            state=state,
            exit_code=code,
            url=self.url,
            started_at=parse_time(record.get("started_at")),
            ident=str(self.pid),
            source=record.get("source"),
            cache=record.get("cache"),
            lora_dir=record.get("lora_dir"),
            lora_refresh=parse_seconds(record.get("lora_refresh")),
            idle_stop=parse_seconds(record.get("idle_stop")),
            group=record.get("group"),
            rank=self.rank,
            nodes=int(record.get("nodes") or 1),
            address=str(record.get("address") or ""),
        )


def _tail_offset(handle: BinaryIO, count: int) -> int:
    """Where the last ``count`` lines of the file begin, read backwards a block at a time."""
    end = handle.seek(0, os.SEEK_END)
    if count <= 0:
        return end
    position, seen = end, 0
    while position > 0:
        start = max(0, position - _BLOCK)
        handle.seek(start)
        block = handle.read(position - start)
        cut = len(block)
        while (cut := block.rfind(b"\n", 0, cut)) != -1:
            if start + cut != end - 1:  # a final newline ends the last line, it starts none
                seen += 1
                if seen == count:
                    return start + cut + 1
        position = start
    return 0


def _load(folder: Path) -> LocalHandle | None:
    try:
        record = json.loads((folder / INSTANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return LocalHandle(folder, record) if isinstance(record, dict) and "name" in record else None


def find(name: str) -> LocalHandle | None:
    folder = instances_dir() / name
    return _load(folder) if folder.is_dir() else None


def list_handles() -> list[LocalHandle]:
    root = instances_dir()
    if not root.is_dir():
        return []
    return [handle for folder in sorted(root.iterdir()) if (handle := _load(folder)) is not None]


def list_instances(*, all_states: bool) -> list[Instance]:
    instances = [handle.to_instance() for handle in list_handles()]
    return [i for i in instances if all_states or i.running]


def check_name_free(name: str) -> LocalHandle | None:
    """Refuse a name a running local instance holds; an ended one's record is returned."""
    previous = find(name)
    if previous is not None and previous.state()[0] == "running":
        raise name_in_use_error(name, f"a local instance (pid {previous.pid})")
    return previous


def clear_ended(name: str) -> None:
    """Remove the record of an ended local instance called ``name``, so that whatever takes
    the name next (a container, or a new local instance) is the only one ``logs`` and ``stop``
    find. A running one is refused, never removed."""
    previous = check_name_free(name)
    if previous is not None:
        shutil.rmtree(previous.folder, ignore_errors=True)


def start(spec: RunSpec) -> LocalHandle:
    folder = instances_dir() / spec.name
    clear_ended(spec.name)
    check_port_free(spec.host, spec.port)  # a worker's too: its health port
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    command = [*_serve_command(), *spec.engine_args]
    record: dict[str, Any] = {
        "name": spec.name,
        "model": spec.model,
        "source": spec.model_path,
        "profile_id": spec.profile_id,
        "profile_name": spec.profile_name,
        "url": spec.url,
        "host": spec.host,
        "port": spec.port,
        "cache": str(spec.cache_dir),
        # What a container's labels say (LORA_DIR_LABEL, LORA_REFRESH_LABEL), for `nimctl lora`.
        "lora_dir": str(spec.lora_dir) if spec.lora_dir is not None else None,
        "lora_refresh": spec.lora_refresh,
        # What a container's IDLE_STOP_LABEL says: `ps` knows it even when the server does not answer.
        "idle_stop": spec.idle_stop,
        "command": command,
        "started_at": datetime.now(UTC).isoformat(),
    }
    if spec.group is not None:  # what a container's GROUP_LABEL, NODE_RANK_LABEL, NODES_LABEL say
        record |= {"group": spec.group, "rank": spec.rank, "nodes": spec.nodes, "address": spec.address}
    env = process_environment(spec)
    with (folder / LOG_FILE).open("ab") as log:
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "nimctl.runtime.launcher", str(folder), "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=folder,
                start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeFailure(f"could not start nim-serve: {exc.strerror or exc}") from None
    try:
        record["pid"] = process.pid
        # Read before anyone reaps it: the launcher is our child, so its /proc entry stays until then.
        record["pid_identity"] = process_identity(process.pid)
        tmp = folder / f".{INSTANCE_FILE}.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        tmp.replace(folder / INSTANCE_FILE)
    except BaseException:  # Ctrl-C included: a process nothing records could never be stopped
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # the engine cannot have started yet
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return LocalHandle(folder, record, process)


def process_environment(spec: RunSpec) -> dict[str, str]:
    """What ``nim-serve`` runs with: the caller's environment under the spec's (which tells a
    host process the paths and port a container has built in), output unbuffered for the log.

    The caller's ``NIMCTL_API_KEY`` is the client commands' key for some server: it does not pass
    on, or it would let a second key into this instance (``-e NIMCTL_API_KEY=...`` still does)."""
    inherited = {key: value for key, value in os.environ.items() if key != contract.API_KEY}
    return {**inherited, **spec.env, "PYTHONUNBUFFERED": "1"}


def logs(handle: LocalHandle, *, follow: bool, tail: int | None) -> Iterator[str]:
    return handle.read(tail=tail, follow=follow)


def stop(handle: LocalHandle, timeout: float = STOP_TIMEOUT_S) -> Stopped:
    """SIGTERM to the launcher (it passes it on), wait, then end whatever of the instance is left.

    The tree (launcher, nim-serve, the engine in its own session, its workers) is read before
    the signal: once the launcher has gone its descendants cannot be found from it any more.
    The front stops its engine itself on SIGTERM; what outlives the launcher, or everything
    after ``timeout``, is killed.
    """
    gone = not handle.folder.is_dir()  # stopped by someone else since it was found
    was_running = handle.state()[0] == "running"
    if was_running:
        tree = process_tree(handle.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while handle.state()[0] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        if tree:
            end_tree(tree, grace_s=_LEFTOVER_GRACE_S if handle.state()[0] != "running" else 0)
        elif handle.state()[0] == "running":  # no /proc: the launcher's group is all we can reach
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pid, signal.SIGKILL)
        while handle.state()[0] == "running" and time.monotonic() < deadline + 5:
            time.sleep(0.1)
    final = handle.to_instance()
    shutil.rmtree(handle.folder, ignore_errors=True)
    if gone and not was_running:
        final.state, final.exit_code = "gone", None
    return Stopped(final, was_running)


class LocalRuntime(InstanceRuntime[LocalHandle]):
    """Host processes, each with a state folder; needs no daemon, so it never is unavailable."""

    kind = "local"
    placement = HostPlacement()  # folders, port and address told through the server's variables
    noun = "local instance"
    plural = "local instances"
    title = "the local runtime"

    def start(
        self,
        spec: RunSpec,
        *,
        others: Sequence[InstanceRuntime[Handle]],
        on_build: BuildListener | None = None,
    ) -> LocalHandle:
        for other in others:
            other.check_name(spec.name)
        return start(spec)  # the module's start(): an ended record of the name is cleared there

    def check_name(self, name: str) -> None:
        check_name_free(name)

    def forget_ended(self, name: str) -> None:
        # One started meanwhile keeps its record (and the name check it answers).
        with contextlib.suppress(UsageError):
            clear_ended(name)

    def find(self, name: str) -> LocalHandle | None:
        return find(name)

    def list(self, *, all_states: bool) -> list[Instance]:
        return list_instances(all_states=all_states)

    @contextlib.contextmanager
    def all_handles(self) -> Iterator[list[LocalHandle]]:
        yield list_handles()

    def logs(self, handle: LocalHandle, *, follow: bool, tail: int | None) -> Iterator[str]:
        return logs(handle, follow=follow, tail=tail)

    def stop(self, handle: LocalHandle, timeout: float = STOP_TIMEOUT_S) -> Stopped:
        return stop(handle, timeout)

    def command_line(self, spec: RunSpec, *, detach: bool) -> str:
        return "\n".join(local_run_line(member) for member in self.members(spec))

    def members(self, spec: RunSpec) -> list[RunSpec]:
        return local_members(spec)

    def find_group(self, group: str) -> list[LocalHandle]:
        handles = [handle for handle in list_handles() if handle.record.get("group") == group]
        return sorted(handles, key=lambda handle: handle.rank)

    def what_runs(self, spec: RunSpec) -> str:
        return "a host process"
