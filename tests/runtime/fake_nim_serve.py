"""A stand-in for ``nim-serve`` in the runtime layer's unit tests: health endpoints only.

FAKE_NIM_MODE: ``ok`` (live at once, ready on the second ready probe), ``exit`` (prints,
then exits 3 before answering anything), ``never-ready`` (live, never ready); for node n of a
group only: FAKE_NIM_MODE_RANKn. It listens where nim-serve would:
NIMCTL_SERVER_HOST:NIM_SERVER_PORT, and stops on SIGTERM with exit 0.

FAKE_NIM_ENGINE=stubborn starts an "engine" the way the real front does, in a session of its
own, and one that ignores SIGTERM and that the fake never stops: only nimctl can end it.
FAKE_NIM_STOP_DELAY=SECONDS makes the stop on SIGTERM take that long; FAKE_NIM_IGNORE_TERM=1
makes the fake ignore SIGTERM altogether (a front that hangs while stopping).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# FAKE_NIM_MODE_RANK1=exit: only the group's node 1 exits (a member of `run --nodes`).
mode = os.environ.get(f"FAKE_NIM_MODE_RANK{os.environ.get('NIM_NODE_RANK', '0')}") or os.environ.get(
    "FAKE_NIM_MODE", "ok"
)
print(f"fake nim-serve starting: mode={mode} model={os.environ.get('NIM_MODEL_PATH')}", flush=True)
print(f"profile={os.environ.get('NIM_MODEL_PROFILE')} args={sys.argv[1:]}", flush=True)
if mode == "exit":
    print("fatal: the engine could not start", flush=True)
    sys.exit(3)

ready_probes = 0
if os.environ.get("FAKE_NIM_ENGINE") == "stubborn":
    engine = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
        ],
        start_new_session=True,
    )
    print(f"fake engine started (pid {engine.pid})", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global ready_probes
        if self.path == "/v1/health/live":
            self.send_response(200)
        elif self.path == "/v1/health/ready":
            ready_probes += 1
            self.send_response(200 if mode == "ok" and ready_probes >= 2 else 503)
        else:
            self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        print("request: " + format % args, flush=True)


server = ThreadingHTTPServer(
    (os.environ.get("NIMCTL_SERVER_HOST", "127.0.0.1"), int(os.environ.get("NIM_SERVER_PORT", "8000"))),
    Handler,
)


def _stop(_signum: int, _frame: object) -> None:
    print("fake nim-serve: SIGTERM, stopping", flush=True)
    time.sleep(float(os.environ.get("FAKE_NIM_STOP_DELAY", "0")))
    sys.exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("FAKE_NIM_IGNORE_TERM") else _stop)
print("fake nim-serve: listening", flush=True)
server.serve_forever()
