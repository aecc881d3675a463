"""Brings the engine up behind the front and watches it.

Order, as NIM does it: the front is already live -> fetch the model files -> start the
engine -> poll its health and model list until it answers -> ready. If the engine exits
at any point, the front logs why and asks to exit non-zero so that a restart policy acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

from nimctl.errors import ConfigError, ModelStoreError, NimctlError
from nimctl.server.engine import EngineProcess, free_loopback_port
from nimctl.server.fetch import fetch_model
from nimctl.server.membership import GroupLeader
from nimctl.server.nodes import leader_ip
from nimctl.server.plan import engine_environment
from nimctl.server.proxy import EngineProxy
from nimctl.server.state import Cut, Phase, ServerState
from nimctl.store.progress import FetchProgress

log = logging.getLogger("nimctl.server")

EXIT_ENGINE_FAILED = 1
# After a failure the front stays up this long, answering 503 with the reason, so that
# probes and `nimctl ps` can see why before the process exits.
FAILED_LINGER_S = 2.0
LOADING_POLL_S = 0.5
# A ready (or hung) engine is probed this often, each probe given PROBE_TIMEOUT_S to answer:
# a frozen engine keeps its port open and answers nothing, so only a deadline notices it.
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
# Failed probes in a row needed, besides NIMCTL_ENGINE_HUNG_TIMEOUT seconds without an answer,
# before a ready engine counts as hung: one slow answer on a loaded machine is not a hang.
HUNG_AFTER_FAILURES = 2


class Supervisor:
    def __init__(self, state: ServerState, proxy: EngineProxy, request_exit: Callable[[int], None]) -> None:
        self.state = state
        self.proxy = proxy
        self.request_exit = request_exit
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._failed = False  # the first failure stands: nothing after it starts or overwrites it

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._bring_up(), name="engine-bring-up"))

    async def stop(self, timeout: float) -> None:
        failed = self._failed
        self._stopping = True
        self.state.set_phase(Phase.stopping)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.state.group is not None:
            # A stop asked for lets the workers exit 0; after a failure they exit non-zero too.
            await self.state.group.close("the leader stopped", bye=not failed)
        if self.state.engine is not None:
            await self.state.engine.stop(timeout)

    def _fail(self, detail: str, code: int = EXIT_ENGINE_FAILED) -> None:
        if self._stopping or self._failed:
            return
        self._failed = True
        self.state.set_phase(Phase.failed, detail)
        self.state.exit_code = code
        asyncio.get_running_loop().call_later(FAILED_LINGER_S, self.request_exit, code)

    def _fetched(self, progress: FetchProgress) -> None:
        if self.state.phase is Phase.fetching:  # a report that arrives after a stop began is old news
            self.state.fetch_progress = progress

    def _worker_lost(self, rank: int, why: str) -> None:
        if self._stopping or self.state.draining:
            # A stop of the whole group (`nimctl stop`, an orchestrator) reaches every node at once:
            # a worker leaving then is part of the stop, not a failure of the group.
            log.info("worker node %d left the group while the leader stops (%s)", rank, why)
            return
        message = f"worker node {rank} left the group ({why})"
        # The engine cannot finish them without that node: end them now rather than let them hang.
        self.state.in_flight.cut_all(Cut(503, f"{message}: request ended"), standing=True)
        self._fail(message)

    async def _form_group(self) -> str | None:
        """On a group's leader: take the workers' joins from now on; returns the leader's address."""
        node = self.state.plan.node
        if not node.multi_node:
            return None
        group = GroupLeader(node.nodes, self.state.plan.profile_id, on_lost=self._worker_lost)
        # Resolved off the loop, before workers can join: a DNS lookup stalls nothing they wait on.
        own_ip = await asyncio.to_thread(leader_ip, node)
        await group.start(node.node_address or "0.0.0.0", node.join_port)
        self.state.group = group
        return own_ip

    async def _bring_up(self) -> None:
        plan = self.state.plan
        try:
            own_ip = await self._form_group()
            self.state.set_phase(Phase.fetching, plan.source.uri)
            log.info("fetching model files for %s", plan.source.uri)
            model_dir = await fetch_model(
                plan.source,
                plan.config.cache_path,
                offline=plan.config.disable_model_download,
                on_progress=self._fetched,
            )
            if self._failed:  # a worker was lost meanwhile: no engine for a group that has failed
                return
            self.state.model_dir = model_dir
            # Chosen now, not at plan time: a port picked before a long fetch may be taken since.
            self.state.engine_port = plan.engine_port or free_loopback_port()
            command = plan.command(model_dir, self.state.engine_port, leader_ip=own_ip)
            engine = EngineProcess(command, engine_environment(plan, own_ip))
            self.state.engine = engine
            await engine.start()
            self.state.engine_starts += 1
            if self._failed:
                return
            self.state.set_phase(Phase.loading, f"engine pid {engine.pid}")
        except ModelStoreError as exc:
            # The model cannot be had (offline and not cached, a full disk): its own exit code says so.
            log.error("cannot fetch the model files: %s%s", exc.message, f" ({exc.hint})" if exc.hint else "")
            self._fail(exc.message, exc.exit_code)
            return
        except ConfigError as exc:  # the group's own settings (a join port in use, an address)
            log.error("%s%s", exc.message, f" ({exc.hint})" if exc.hint else "")
            self._fail(exc.message, exc.exit_code)
            return
        except NimctlError as exc:
            log.error("cannot start the engine: %s", exc.message)
            self._fail(exc.message)
            return
        except Exception as exc:
            log.exception("cannot start the engine")
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self._tasks.append(asyncio.create_task(self._watch_exit(engine), name="engine-exit"))
        await self._watch_health()

    async def _watch_exit(self, engine: EngineProcess) -> None:
        code = await engine.wait()
        if self._stopping:
            return
        lines = engine.last_lines(15)
        log.error("engine exited with code %s; its last lines:\n%s", code, "\n".join(lines) or "(none)")
        self._fail(f"engine exited with code {code}")

    async def _watch_health(self) -> None:
        """Probe the engine until it fails or stops; ready when it answers, hung when it stops answering.

        A hung engine's requests in flight are ended (504) rather than left to wait on it, and new
        ones are refused (503) until it answers again: then it is ready again, as it was.
        """
        hung_after = self.state.plan.config.engine_hung_timeout
        failures = 0
        last_answer = time.monotonic()
        while self.state.phase in (Phase.loading, Phase.ready, Phase.unhealthy):
            if await self._probe() and self.state.group_complete:
                failures = 0
                last_answer = time.monotonic()
                if self.state.phase is Phase.unhealthy:
                    self.state.in_flight.lift()
                    log.info("the engine answers its health check again")
                if self.state.phase is Phase.loading:
                    await self._serve_adapters()
                if self.state.phase is not Phase.ready:
                    self.state.set_phase(Phase.ready)
                    log.info("ready: %s answers on the engine", self.state.plan.served_name)
            elif self.state.phase is not Phase.loading:
                failures += 1
                silent = time.monotonic() - last_answer
                hung = failures >= HUNG_AFTER_FAILURES and silent >= hung_after
                if hung and self.state.phase is Phase.ready:
                    self._declare_hung(silent)
            loading = self.state.phase is Phase.loading
            await asyncio.sleep(LOADING_POLL_S if loading else PROBE_INTERVAL_S)

    async def _serve_adapters(self) -> None:
        """Load the LoRA adapters found at start (the server is ready after), and rescan from then on
        when asked to. A failed scan is logged and never stops the server: the base model serves."""
        adapters = self.state.adapters
        if adapters is None:
            return
        self.state.detail = f"loading LoRA adapters from {adapters.settings.folder}"
        try:
            await adapters.scan()
        except Exception:
            log.exception("loading the LoRA adapters in %s failed", adapters.settings.folder)
        interval = adapters.settings.refresh_interval
        if interval is not None:
            task = adapters.refresh_forever(interval, lambda: self.state.phase is Phase.ready)
            self._tasks.append(asyncio.create_task(task, name="lora-rescan"))

    def _declare_hung(self, silent: float) -> None:
        self.state.set_phase(Phase.unhealthy, f"no answer for {silent:.0f} s")
        message = f"the engine stopped answering (no health check answer for {silent:.0f} s): request ended"
        ended = self.state.in_flight.cut_all(Cut(504, message), standing=True)
        log.warning(
            "engine stopped answering its health check (%.0f s without an answer); ending %d request(s)",
            silent,
            ended,
        )

    async def _probe(self) -> bool:
        """The engine is healthy when /health answers 200 and /v1/models lists our model."""
        try:
            status, _ = await self.proxy.call_json("GET", "/health", timeout=PROBE_TIMEOUT_S, cuttable=False)
            if status != 200:
                return False
            models = await self.proxy.list_models(timeout=PROBE_TIMEOUT_S, cuttable=False)
        except (aiohttp.ClientError, TimeoutError):
            return False
        self.state.engine_models = models or []
        return any(m.get("id") == self.state.plan.served_name for m in self.state.engine_models)
