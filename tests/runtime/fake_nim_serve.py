"""A stand-in for ``nim-serve`` in the runtime layer's unit tests: health endpoints only.

FAKE_NIM_MODE: ``ok`` (live at once, ready on the second ready probe), ``exit`` (prints,
then exits 3 before answering anything), ``never-ready`` (live, never ready). It listens
where nim-serve would: NIMCTL_SERVER_HOST:NIM_SERVER_PORT, and stops on SIGTERM with exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode = os.environ.get("FAKE_NIM_MODE", "ok")
print(f"fake nim-serve starting: mode={mode} model={os.environ.get('NIM_MODEL_PATH')}", flush=True)
print(f"profile={os.environ.get('NIM_MODEL_PROFILE')} args={sys.argv[1:]}", flush=True)
if mode == "exit":
    print("fatal: the engine could not start", flush=True)
    sys.exit(3)

ready_probes = 0


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
    sys.exit(0)


signal.signal(signal.SIGTERM, _stop)
print("fake nim-serve: listening", flush=True)
server.serve_forever()
