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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nimctl.errors import RuntimeFailure, UsageError
from nimctl.runtime.instances import Instance, Stopped, parse_time
from nimctl.runtime.launcher import EXIT_CODE_FILE
from nimctl.runtime.paths import instances_dir
from nimctl.runtime.ports import check_port_free
from nimctl.runtime.spec import RunSpec

INSTANCE_FILE = "instance.json"
LOG_FILE = "server.log"
STOP_TIMEOUT_S = 30
_TAIL_BYTES = 256 * 1024


def _serve_command() -> list[str]:
    """``nim-serve`` from this nimctl's own environment, so the server matches the CLI."""
    beside = Path(sys.executable).with_name("nim-serve")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("nim-serve")
    if found:
        return [found]
    return [sys.executable, "-c", "from nimctl.cli.serve import main; main()"]


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    return text.rsplit(")", 1)[1].split()


def process_identity(pid: int) -> str | None:
    """What tells this process from a later one given the same pid: boot id and start time.

    A pid alone is not enough: after a reboot or once pids wrap, the pid in ``instance.json``
    can belong to an unrelated process, which ``ps`` must not show and ``stop`` must not
    signal. None where there is no ``/proc`` (not Linux) or no such process.
    """
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    boot_id = ""
    with contextlib.suppress(OSError):
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    # Field 22 of stat (the 20th after the name): start time in clock ticks since boot.
    return f"{boot_id}:{fields[19]}"


def _has_proc() -> bool:
    return Path("/proc/self/stat").is_file()


def _pid_running(pid: int, identity: str | None) -> bool:
    """Whether ``pid`` is still the process recorded as ``identity`` and has not ended."""
    if not _has_proc():  # no way to tell a reused pid here: whether it exists is all we know
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _proc_stat(pid)
    if fields is None or fields[0] == "Z":  # gone, or a zombie: ended for our purposes
        return False
    return identity is not None and process_identity(pid) == identity


class LocalHandle:
    """A local instance's state folder and process."""

    def __init__(self, folder: Path, record: dict[str, Any], process: subprocess.Popen[bytes] | None = None):
        self.folder = folder
        self.record = record
        self.process = process
        self.name = str(record["name"])
        self.url = str(record["url"])

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
        if self.pid and _pid_running(self.pid, self.pid_identity):
            return "running", None
        return "exited", self.exit_code()

    def last_lines(self, count: int) -> list[str]:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - _TAIL_BYTES))
                data = handle.read()
        except OSError:
            return []
        return data.decode("utf-8", "replace").splitlines()[-count:]

    def follow(self, *, from_start: bool = False) -> Iterator[str]:
        """Lines as the server writes them, until it has ended and everything is read."""
        with self.log_path.open("rb") as handle:
            if not from_start:
                handle.seek(0, os.SEEK_END)
            partial = b""
            while True:
                chunk = handle.read(65536)
                if chunk:
                    partial += chunk
                    *lines, partial = partial.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace")
                    continue
                if self.state()[0] != "running":
                    if partial:
                        yield partial.decode("utf-8", "replace")
                    return
                time.sleep(0.2)

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
        )


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


def start(spec: RunSpec) -> LocalHandle:
    folder = instances_dir() / spec.name
    previous = find(spec.name)
    if previous is not None:
        state, _ = previous.state()
        if state == "running":
            raise UsageError(
                f"the name {spec.name} is in use by a local instance (pid {previous.pid})",
                hint=f"pass another --name, or stop it first: nimctl stop {spec.name}",
            )
        shutil.rmtree(folder, ignore_errors=True)  # an ended instance's leftovers
    check_port_free(spec.host, spec.port)
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    command = [*_serve_command(), *spec.engine_args]
    record: dict[str, Any] = {
        "name": spec.name,
        "model": spec.model,
        "profile_id": spec.profile_id,
        "profile_name": spec.profile_name,
        "url": spec.url,
        "host": spec.host,
        "port": spec.port,
        "cache": str(spec.cache_dir),
        "command": command,
        "started_at": datetime.now(UTC).isoformat(),
    }
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
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
    record["pid"] = process.pid
    # Read before anyone reaps it: the launcher is our child, so its /proc entry stays until then.
    record["pid_identity"] = process_identity(process.pid)
    tmp = folder / f".{INSTANCE_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(folder / INSTANCE_FILE)
    return LocalHandle(folder, record, process)


def logs(handle: LocalHandle, *, follow: bool, tail: int | None) -> Iterator[str]:
    lines = handle.last_lines(tail) if tail is not None else handle.last_lines(10**9)
    yield from lines
    if follow:
        yield from handle.follow()


def stop(handle: LocalHandle, timeout: float = STOP_TIMEOUT_S) -> Stopped:
    """SIGTERM to the launcher (it passes it on), wait, SIGKILL the group; remove the state folder."""
    was_running = handle.state()[0] == "running"
    if was_running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while handle.state()[0] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        if handle.state()[0] == "running":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pid, signal.SIGKILL)
            while handle.state()[0] == "running" and time.monotonic() < deadline + 5:
                time.sleep(0.1)
    final = handle.to_instance()
    shutil.rmtree(handle.folder, ignore_errors=True)
    return Stopped(final, was_running)
