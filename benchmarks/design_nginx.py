"""Candidate 2 of issue #11: nginx (Debian's) on the data path, the Python front beside it.

nginx listens where clients connect. The inference routes go straight to the engine's loopback
port, with the API key, body limit and rate limit checked in C (benchmarks/nginx_front.conf);
everything else (health, metrics, metadata, /v1/models, unknown paths) goes to nim-serve's front,
which keeps supervision and readiness. This prototype starts nginx once the front is ready; a
real one would have the front switch nginx's inference upstream on readiness (see the findings).

The front's own process idles during inference, so only nginx's processes are ``front_pids``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import design_nim_serve
from _designs import Deployment
from _nim_serve import free_port

CONF_TEMPLATE = Path(__file__).with_name("nginx_front.conf")
MAX_BODY_BYTES = 32 * 1024 * 1024  # nimctl's default NIMCTL_MAX_BODY_BYTES (nimctl/server/config.py)
RATE_PER_S = 100_000  # per key: generous, so the benchmark measures the path, not the limit
START_TIMEOUT_S = 10.0
MISSING = "missing API key: send 'Authorization: Bearer KEY'"  # nimctl/server/auth.py's messages
INVALID = "invalid API key"
ANY_BEARER = "~*^bearer\\s+\\S"  # a token there, but not a known one: "invalid", else "missing"

GAPS = [
    "body checks that keep engine 500s away, the UTF-8 one too (nimctl/server/request_checks.py)",
    "media guard: the front fetches no media URL (media_fetch.py) and the engine may fetch none",
    "engine 500 -> 400/502 judging, and the resend vLLM asks for (inference.py)",
    "hashed keys (sha256: lines): no SHA-256 in nginx without njs; the key is in nginx.conf",
    "constant-time key compare: a regex stops at the first differing byte",
    "the front's readiness: nginx's own 503 only while the engine's port refuses connections",
    "drain 503: SIGQUIT closes nginx's port (connections refused), then lets streams finish",
    "the front's metrics of inference requests; in-flight tracking (hung-engine cut, SSE error)",
    "concurrency limit with a queue (NIMCTL_MAX_CONCURRENT_REQUESTS/QUEUE_TIMEOUT)",
    "whole-body deadline (client_body_timeout is per read) and header bytes in all (per line)",
    "a POST on a pooled connection the engine just closed is a 502, not resent",
]


class _Conf(string.Template):
    delimiter = "%%"  # nginx's config is full of "$"


def _quoted(text: str) -> str:
    """``text`` as one double-quoted nginx string."""
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ValueError("an API key with control characters cannot go into nginx's config")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key_entries(key: str | None) -> str:
    """The ``map`` lines of the key check: the key's own regex first, then the refusals."""
    if key is None:
        return 'default "";'
    # Like auth.py: the scheme in any case, spaces around the token; the token itself exactly.
    accept = "~^(?i:bearer)\\s+" + re.escape(key) + "\\s*$"
    lines = [
        f'{_quoted(accept)} "";',
        f"{_quoted(ANY_BEARER)} {_quoted(INVALID)};",
        f"default {_quoted(MISSING)};",
    ]
    return "\n        ".join(lines)


def _nginx_binary() -> str:
    # /usr/sbin is not on a non-root PATH; Debian's nginx (and nginx-light) puts it there.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        sys.exit("nginx not found: apt-get install nginx-light")
    return found


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (nginx's workers are its master's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:  # field 4 of proc(5): ppid
            found.append(int(entry.name))
    return found


def _terminate(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


def _start_nginx(conf: Path, workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    """nginx in the foreground (``daemon off``: it is our child), up on ``port``, and its workers."""
    stderr = (workdir / "nginx.stderr").open("wb")  # what it says before error_log is open
    command = [_nginx_binary(), "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"]
    subprocess.run([*command[:-2], "-t", "-q"], check=True, stderr=stderr)  # a bad config: say so now
    master = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if master.poll() is not None:
            sys.exit(f"nginx exited with {master.returncode}; see {workdir}/nginx.stderr and error.log")
        workers = _children(master.pid)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            workers = []
        if workers:
            return master, workers
        time.sleep(0.05)
    _terminate(master, 5)
    sys.exit(f"nginx did not come up on port {port}; see {workdir}/error.log")


def _write_conf(workdir: Path, key: str | None, port: int, engine_port: int, front_port: int) -> Path:
    user_line = ""
    if os.geteuid() == 0:
        # A root master runs its workers as nobody: they must reach the temp folders it makes.
        workdir.chmod(0o711)
        user_line = "user nobody nogroup;"
    conf = workdir / "nginx.conf"
    conf.touch(0o600)  # it holds the key
    conf.write_text(
        _Conf(CONF_TEMPLATE.read_text()).substitute(
            USER_LINE=user_line,
            WORKDIR=str(workdir),
            KEY_ENTRIES=_key_entries(key),
            RATE_PER_S=RATE_PER_S,
            MAX_BODY_BYTES=MAX_BODY_BYTES,
            ENGINE_PORT=engine_port,
            FRONT_PORT=front_port,
            PORT=port,
        )
    )
    (workdir / "tmp").mkdir(exist_ok=True)
    return conf


def start(model: str, key: str | None, workdir: Path) -> Deployment:
    workdir.mkdir(parents=True, exist_ok=True)
    # nim-serve as the lean design runs it (its management routes want the key too); nginx in front.
    front = design_nim_serve.start(model, key, workdir)
    front_port, engine_port = urlsplit(front.url).port, urlsplit(front.direct_url).port
    assert front_port is not None and engine_port is not None
    port = free_port()
    try:
        nginx, workers = _start_nginx(_write_conf(workdir, key, port, engine_port, front_port), workdir, port)
    except BaseException:
        front.stop()
        raise

    def stop() -> None:
        _terminate(nginx, 10)  # SIGTERM: nginx's fast shutdown (SIGQUIT would drain)
        front.stop()

    return Deployment(
        name="nginx",
        url=f"http://127.0.0.1:{port}",
        direct_url=f"http://127.0.0.1:{engine_port}",
        key=key,
        front_pids=[nginx.pid, *workers],
        stop=stop,
        gaps=list(GAPS),
    )
