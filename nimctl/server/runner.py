"""Runs the front under uvicorn until SIGTERM/SIGINT or an engine failure; returns the exit code."""

from __future__ import annotations

import logging
import signal
import socket
from types import FrameType

import uvicorn

from nimctl.errors import UsageError
from nimctl.server.app import create_app
from nimctl.server.logs import configure_logging
from nimctl.server.plan import LaunchPlan
from nimctl.server.state import ServerState

log = logging.getLogger("nimctl.server")


class _FrontServer(uvicorn.Server):
    """uvicorn, plus: new requests get 503 from the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.state.draining:
            log.info("signal %s: draining in-flight requests, then stopping the engine", sig)
        self.state.draining = True
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises caught signals on exit; a SIGTERM that drained cleanly is exit 0.
            self._captured_signals.remove(sig)


def bind_port(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so that a port in use is one clear error and nothing else runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="set NIM_SERVER_PORT to a free port",
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(plan: LaunchPlan) -> int:
    config = plan.config
    configure_logging(config.log_level, config.jsonl_logging)
    sock = bind_port(config.host, config.server_port)
    state = ServerState(plan)
    server: _FrontServer | None = None

    def request_exit(code: int) -> None:
        state.exit_code = code
        if server is not None:
            server.should_exit = True

    app = create_app(state, request_exit=request_exit)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.server_port,
        log_config=None,
        access_log=config.log_level == "DEBUG",
        timeout_graceful_shutdown=int(config.shutdown_timeout),
        lifespan="on",
    )
    server = _FrontServer(uv_config, state)
    log.info(
        "nim-serve on %s:%s; model %s; profile %s (%s)",
        config.host,
        config.server_port,
        plan.source.uri,
        plan.profile_name or "none",
        plan.selection_reason,
    )
    server.run(sockets=[sock])
    return state.exit_code
