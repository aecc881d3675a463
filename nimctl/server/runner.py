"""Runs the front under uvicorn until SIGTERM/SIGINT or an engine failure; returns the exit code."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import signal
import socket
import ssl
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from nimctl.errors import UsageError
from nimctl.server.app import create_app
from nimctl.server.logs import configure_logging
from nimctl.server.plan import LaunchPlan
from nimctl.server.state import Cut, ServerState

if TYPE_CHECKING:
    from nimctl.server.config import ServerConfig
    from nimctl.server.worker import WorkerState

log = logging.getLogger("nimctl.server")

# After the drain ends what is left in flight, uvicorn gets this long to see those responses out
# before it cancels what remains (only a request that is not a relay to the engine can remain).
DRAIN_BACKSTOP_S = 2.0


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM and sig in self._captured_signals:
            # uvicorn re-raises caught signals on exit; a SIGTERM that stopped it cleanly is exit 0.
            self._captured_signals.remove(sig)


class _FrontServer(_Server):
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
    # Not inheritable (Python's default, said here on purpose): uvicorn serves a socket it is
    # given in this process and needs no child to inherit it (only its --workers/--reload
    # modes, which the front does not use, spawn children that do), and every child the front
    # starts (engine, fetch, watchdog) must not hold the port open after the front has gone.
    sock.set_inheritable(False)
    return sock


def tls_options(config: ServerConfig) -> dict[str, Any]:
    """uvicorn's TLS keywords for NIM_SSL_MODE: none when DISABLED; MTLS also wants a client
    certificate that the NIM_SSL_CA_CERTS_PATH CA signed (the handshake fails without one)."""
    if config.ssl_mode == "DISABLED":
        return {}
    options: dict[str, Any] = {
        "ssl_keyfile": str(config.ssl_key_path),
        "ssl_certfile": str(config.ssl_certs_path),
    }
    if config.ssl_ca_certs_path is not None:
        options["ssl_ca_certs"] = str(config.ssl_ca_certs_path)
    if config.ssl_mode == "MTLS":
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def _run(
    plan: LaunchPlan,
    state: ServerState | WorkerState,
    build_app: Callable[[Callable[[int], None]], Any],
    make_server: Callable[[uvicorn.Config], _Server],
    announce: Callable[[], None],
) -> int:
    """Bind first (a port in use is one clear error and nothing else runs), build the app with a
    way to ask for an exit with a code, serve until asked or signalled, return the exit code."""
    config = plan.config
    configure_logging(config.log_level, config.jsonl_logging)
    sock = bind_port(config.host, config.server_port)
    server: _Server | None = None

    def request_exit(code: int) -> None:
        state.exit_code = code
        if server is not None:
            server.should_exit = True

    server = make_server(uvicorn_config(build_app(request_exit), config))
    announce()
    # What exists now (the app, the plan, imported modules) lives as long as the server: the
    # collector need not walk it again in every full collection (it cost ~4 % of the front's CPU).
    gc.freeze()
    server.run(sockets=[sock])
    return state.exit_code


def serve(plan: LaunchPlan) -> int:
    config = plan.config
    state = ServerState(plan)

    def announce() -> None:
        log.info(
            "nim-serve on %s:%s (%s); model %s; profile %s (%s)",
            config.host,
            config.server_port,
            "https" if config.ssl_mode != "DISABLED" else "http",
            plan.source.uri,
            plan.profile_name or "none",
            plan.selection_reason,
        )

    return _run(
        plan,
        state,
        lambda request_exit: create_app(state, request_exit=request_exit),
        lambda uv_config: _FrontServer(uv_config, state),
        announce,
    )


def serve_worker(plan: LaunchPlan) -> int:
    """A worker node of a group (nimctl.server.worker): probes on NIM_SERVER_PORT, no API."""
    from nimctl.server.worker import WorkerState, create_worker_app

    config, node = plan.config, plan.node
    state = WorkerState(plan)

    def announce() -> None:
        log.info(
            "nim-serve %s: leader %s:%s; probes on %s:%s; model %s; profile %s",
            node.name,
            node.leader_address,
            node.join_port,
            config.host,
            config.server_port,
            plan.source.uri,
            plan.profile_name or "none",
        )

    return _run(plan, state, lambda request_exit: create_worker_app(state, request_exit), _Server, announce)


def uvicorn_config(app: Any, config: ServerConfig) -> uvicorn.Config:
    """uvicorn's settings for the front. The C event loop and HTTP parser are named rather than
    left to "auto", so that a missing one is an error at start, not a slower server."""
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        host=config.host,
        port=config.server_port,
        log_config=None,
        access_log=config.log_level == "DEBUG",
        # uvicorn's deadline is a backstop behind the front's own (``_end_drain``).
        timeout_graceful_shutdown=math.ceil(config.shutdown_timeout + DRAIN_BACKSTOP_S),
        lifespan="on",
        h11_max_incomplete_event_size=config.max_header_bytes,  # under h11 only; limits.py counts too
        **tls_options(config),
    )
