"""Runs the front under uvicorn until SIGTERM/SIGINT or an engine failure; returns the exit code."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
from types import FrameType

import uvicorn

from nimctl.errors import UsageError
from nimctl.server.app import create_app
from nimctl.server.logs import configure_logging
from nimctl.server.plan import LaunchPlan
from nimctl.server.state import Cut, ServerState

log = logging.getLogger("nimctl.server")

# After the drain ends what is left in flight, uvicorn gets this long to see those responses out
# before it cancels what remains (only a request that is not a relay to the engine can remain).
DRAIN_BACKSTOP_S = 2.0


class _FrontServer(uvicorn.Server):
    """uvicorn, plus: new requests get 503 from the moment a stop signal arrives, and the requests
    still in flight when the drain runs out are ended by the front, each with an error in OpenAI's
    shape, before uvicorn's own deadline would cancel them with nothing said (and a traceback each).
    """

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.state.draining:
            log.info("signal %s: draining in-flight requests, then stopping the engine", sig)
            if self._loop is not None:
                # A signal handler, not a loop callback: the timer is armed from inside the loop.
                self._loop.call_soon_threadsafe(self._arm_drain_deadline)
        self.state.draining = True
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises caught signals on exit; a SIGTERM that drained cleanly is exit 0.
            self._captured_signals.remove(sig)

    def _arm_drain_deadline(self) -> None:
        assert self._loop is not None
        self._loop.call_later(self.state.plan.config.shutdown_timeout, self._end_drain)

    def _end_drain(self) -> None:
        timeout = self.state.plan.config.shutdown_timeout
        cut = Cut(503, f"server shutting down: the request was still running after the {timeout:g} s drain")
        ended = self.state.in_flight.cut_all(cut, standing=True)
        if ended:
            log.warning("drain of %g s over: ending %d request(s) still in flight", timeout, ended)


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
        # uvicorn's deadline is a backstop behind the front's own (``_end_drain``).
        timeout_graceful_shutdown=math.ceil(config.shutdown_timeout + DRAIN_BACKSTOP_S),
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
