"""A worker node of a multi-node group (``NIM_NODE_RANK`` >= 1): it serves no API.

Order: join the leader (within ``NIMCTL_LEADER_WAIT``) -> fetch the model files -> run the
engine headless, in the leader's group -> stay until the engine, the leader or a signal ends it.

``NIM_SERVER_PORT`` answers the orchestrator's probes only: ``/v1/health/live`` while the
process runs, ``/v1/health/ready`` once the node has joined and its engine runs. Every other
path is a 404 that says to ask the leader. The exit code tells the orchestrator what happened:
0 when the leader stopped the group or a signal stopped the node, 1 when the engine or the
leader was lost, and nimctl's usual codes for a refusal (2) or a leader never reached (5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nimctl.errors import NimctlError
from nimctl.server.engine import EngineProcess
from nimctl.server.fetch import fetch_model
from nimctl.server.http_errors import error_body, openai_error
from nimctl.server.membership import Ended, Hello, Membership, join
from nimctl.server.plan import LaunchPlan, engine_environment

log = logging.getLogger("nimctl.server")

EXIT_LOST = 1


@dataclass
class WorkerState:
    plan: LaunchPlan
    stage: str = "starting"
    ready: bool = False
    exit_code: int = 0

    @property
    def message(self) -> str:
        return f"{self.plan.node.name}: {self.stage}"


class WorkerNode:
    """Joins, fetches, runs the headless engine and watches it and the leader."""

    def __init__(self, state: WorkerState, request_exit: Callable[[int], None]) -> None:
        self.state = state
        self.request_exit = request_exit
        self.engine: EngineProcess | None = None
        self.membership: Membership | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _end(self, code: int, why: str) -> None:
        self.state.ready = False
        self.state.stage = why
        self.state.exit_code = code
        self.request_exit(code)

    async def run(self) -> None:
        """The node's life; whatever ends it, the process is asked to exit (never a live zombie)."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the worker node failed")
            self._end(EXIT_LOST, f"failed ({type(exc).__name__}: {exc})")

    async def _run(self) -> None:
        plan, role = self.state.plan, self.state.plan.node
        assert role.leader_address is not None  # the configuration requires it of a worker
        self.state.stage = f"joining the leader at {role.leader_address}:{role.join_port}"
        hello = Hello(role.rank, role.nodes, plan.profile_id, role.node_address)
        try:
            joined = await join(
                role.leader_address, role.join_port, hello, role.leader_wait, local=role.node_address
            )
        except NimctlError as exc:
            self._failed(exc)
            return
        self.membership = joined
        log.info("joined the group: leader %s, this node %s", joined.leader_ip, joined.node_ip)
        # Beats from now on: the fetch and the engine's start may take minutes, and the leader
        # counts a silent worker as lost.
        lost = asyncio.create_task(joined.hold(), name="leader-link")
        started = asyncio.create_task(self._start_engine(joined), name="worker-engine-start")
        self._tasks = [lost, started]
        await asyncio.wait({lost, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await started
            self._left(lost.result())
            return
        if started.exception() is not None:
            lost.cancel()
            exc = started.exception()
            await joined.leave("the worker could not start its engine")
            if isinstance(exc, NimctlError):
                self._failed(exc)
            else:
                log.error("cannot start the engine: %s: %s", type(exc).__name__, exc)
                self._end(EXIT_LOST, f"cannot start the engine ({type(exc).__name__})")
            return
        engine = started.result()
        self.state.stage = f"engine running headless (pid {engine.pid})"
        self.state.ready = True
        await self._watch(engine, joined, lost)

    async def _start_engine(self, joined: Membership) -> EngineProcess:
        plan, role = self.state.plan, self.state.plan.node
        self.state.stage = "fetching the model files"
        config = plan.config
        model_dir = await fetch_model(plan.source, config.cache_path, offline=config.disable_model_download)
        node_ip = role.node_address or joined.node_ip
        command = plan.command(model_dir, 0, leader_ip=joined.leader_ip)
        self.engine = EngineProcess(command, engine_environment(plan, node_ip))
        await self.engine.start()
        return self.engine

    def _failed(self, exc: NimctlError) -> None:
        log.error("%s%s", exc.message, f" ({exc.hint})" if exc.hint else "")
        self._end(exc.exit_code, exc.message)

    def _left(self, ended: Ended) -> None:
        if ended.bye:
            log.info("the leader stopped the group: %s", ended.why)
            self._end(0, f"the leader stopped the group ({ended.why})")
        else:
            log.error("lost the leader: %s; stopping the engine", ended.why)
            self._end(EXIT_LOST, f"lost the leader ({ended.why})")

    async def _watch(self, engine: EngineProcess, membership: Membership, lost: asyncio.Task[Ended]) -> None:
        exited = asyncio.create_task(engine.wait())
        done, _ = await asyncio.wait({exited, lost}, return_when=asyncio.FIRST_COMPLETED)
        if exited in done:
            lost.cancel()
            lines = "\n".join(engine.last_lines(15)) or "(none)"
            log.error("engine exited with code %s; its last lines:\n%s", exited.result(), lines)
            await membership.leave("the worker's engine exited")
            self._end(EXIT_LOST, f"engine exited with code {exited.result()}")
            return
        exited.cancel()
        self._left(lost.result())

    async def stop(self) -> None:
        for task in self._tasks:  # a stop during the fetch or the start: nothing starts after it
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.membership is not None:
            await self.membership.leave("the worker is stopping")
        if self.engine is not None:
            await self.engine.stop(self.state.plan.config.shutdown_timeout)


def create_worker_app(state: WorkerState, request_exit: Callable[[int], None]) -> Starlette:
    node = WorkerNode(state, request_exit)

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"object": "health.response", "status": "live", "message": state.message})

    async def ready(request: Request) -> JSONResponse:
        body = {
            "object": "health.response",
            "status": "ready" if state.ready else "not ready",
            "message": state.message,
        }
        if state.ready:
            return JSONResponse(body)
        return JSONResponse({**error_body(503, state.message), **body}, status_code=503)

    async def elsewhere(request: Request) -> JSONResponse:
        message = f"this is a worker node ({state.plan.node.name}); it serves no API: ask the leader"
        return openai_error(404, message)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(node.run(), name="worker-node")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await node.stop()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    routes = [
        Route("/v1/health/live", live, methods=["GET", "HEAD"]),
        Route("/v1/health/ready", ready, methods=["GET", "HEAD"]),
        Route("/{path:path}", elsewhere, methods=methods),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
