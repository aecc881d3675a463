"""The LoRA adapters the front serves: loaded into the engine, rescanned, counted while in use.

The engine starts with LoRA on and no adapter (:mod:`nimctl.server.lora_settings`). Once it answers,
the front scans ``NIM_PEFT_SOURCE`` and loads each adapter that passes the checks of
:mod:`nimctl.lora.folder` through the engine's loopback runtime route; one the engine refuses is
skipped with the engine's reason. The server is ready only after this first scan, so every adapter
found at start answers from the first ready second (static mode). With
``NIM_PEFT_REFRESH_INTERVAL`` the scan runs again every so many seconds (dynamic mode): new folders
are loaded, removed ones unloaded.

An adapter on its way out stops taking requests at once (404), and is unloaded from the engine
only once the requests in flight on it have finished: ``claim`` counts them, a stream until its
last byte is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from nimctl.lora.folder import Adapter, AdapterError, SkippedAdapter, check_adapter, read_adapter, scan_folder
from nimctl.server.lora_settings import LoraSettings
from nimctl.server.proxy import EngineProxy

log = logging.getLogger("nimctl.server")

# Loading reads the adapter's weights into the engine: seconds for a large one.
ENGINE_LOAD_TIMEOUT_S = 120.0
Origin = Literal["folder", "runtime"]


class AdapterConflictError(Exception):
    """A runtime load or unload that the adapters as they stand do not allow (a 409 or a 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EngineLoadError(Exception):
    """The engine did not answer a load: nothing is known to be wrong with the adapter (a 503)."""


# vLLM's answer to a load of a name it holds: after a load the front gave up on, the engine may
# have finished it anyway, and then it serves the adapter.
_ALREADY_LOADED = "has already been loaded"


@dataclass(frozen=True)
class LoadedAdapter:
    adapter: Adapter
    origin: Origin

    def to_dict(self, leaving: bool) -> dict[str, Any]:
        return {**self.adapter.to_dict(), "origin": self.origin, "unloading": leaving}


def _signature(folder: Path) -> tuple[float, ...]:
    """When the folder or its two files last changed: a skipped adapter is looked at again after."""
    stamps: list[float] = []
    for path in (folder, folder / "adapter_config.json", folder / "adapter_model.safetensors"):
        try:
            stat = path.stat()
            stamps += [stat.st_mtime_ns, stat.st_size]
        except OSError:
            stamps += [-1, -1]
    return tuple(stamps)


class AdapterManager:
    def __init__(self, settings: LoraSettings, proxy: EngineProxy) -> None:
        self.settings = settings
        self.proxy = proxy
        self.loaded: dict[str, LoadedAdapter] = {}
        self.skipped: dict[str, SkippedAdapter] = {}
        self._skip_signature: dict[str, tuple[float, ...]] = {}
        self._leaving: dict[str, asyncio.Event] = {}  # name -> set once its last request ended
        self._in_use: Counter[str] = Counter()
        self._lock = asyncio.Lock()  # one scan, load or unload at a time
        self._removals: set[asyncio.Task[None]] = set()
        self.scans = 0  # finished scans of the folder: the first at start, then one per interval

    # -- what the management endpoints show ------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            **self.settings.to_dict(),
            "scans": self.scans,
            "loaded": [item.to_dict(name in self._leaving) for name, item in sorted(self.loaded.items())],
            "skipped": [item.to_dict() for _, item in sorted(self.skipped.items())],
        }

    # -- requests ----------------------------------------------------------------------------
    def refusal(self, model: object) -> str | None:
        """Why a request naming ``model`` gets a 404 from the front, or None to relay it."""
        if not isinstance(model, str):
            return None
        if model in self._leaving:
            return f"The model `{model}` does not exist: the LoRA adapter is being removed."
        if model in self.skipped and model not in self.loaded and model not in self.settings.base_names:
            reason = self.skipped[model].reason
            return f"The model `{model}` does not exist: the LoRA adapter was skipped ({reason})."
        return None

    def claim(self, model: object) -> Callable[[], None] | None:
        """Count a request on adapter ``model`` in flight; the returned function ends it (once)."""
        if not isinstance(model, str) or model not in self.loaded:
            return None
        self._in_use[model] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._in_use[model] -= 1
            if self._in_use[model] <= 0:
                del self._in_use[model]
                if (idle := self._leaving.get(model)) is not None:
                    idle.set()

        return release

    # -- the folder ---------------------------------------------------------------------------
    async def scan(self) -> None:
        """Bring the loaded adapters in line with the folder: load new ones, unload removed ones."""
        settings = self.settings
        async with self._lock:
            found = await asyncio.to_thread(
                scan_folder, settings.folder, max_rank=settings.max_rank, base_names=settings.base_names
            )
            found = [self._named_apart(item) for item in found]
            names = {item.name for item in found}
            for name, item in list(self.loaded.items()):
                if item.origin == "folder" and name not in names and name not in self._leaving:
                    self._start_removal(name, "its folder is gone")
            for name in [n for n in self.skipped if n not in names]:
                del self.skipped[name]
                self._skip_signature.pop(name, None)
            for item in found:
                if item.name in self.loaded or item.name in self._leaving:
                    continue
                signature = await asyncio.to_thread(_signature, item.path)
                if item.name in self.skipped and self._skip_signature.get(item.name) == signature:
                    continue  # skipped before and unchanged since: no new log line every scan
                if isinstance(item, Adapter):
                    try:
                        error = await self._engine_load(item)
                    except EngineLoadError as exc:  # skipped for now; the next scan tries again
                        self._skip(SkippedAdapter(item.name, item.path, str(exc)), None)
                        continue
                    if error is None:
                        self._loaded(item, "folder")
                        continue
                    item = SkippedAdapter(item.name, item.path, error)
                self._skip(item, signature)
            self.scans += 1

    def _named_apart(self, item: Adapter | SkippedAdapter) -> Adapter | SkippedAdapter:
        """An adapter may not take the base model's name: requests naming it are the base model's."""
        if item.name in self.settings.base_names:
            return SkippedAdapter(
                item.name, item.path, "its folder's name is the base model's; rename the folder"
            )
        return item

    async def refresh_forever(self, interval: float, is_ready: Callable[[], bool]) -> None:
        while True:
            await asyncio.sleep(interval)
            if not is_ready():
                continue
            try:
                await self.scan()
            except OSError as exc:  # the folder went away or became unreadable: said once a scan
                log.warning("cannot rescan the LoRA adapters in %s: %s", self.settings.folder, exc)
            except Exception:  # a rescan that fails is logged, and the next one tries again
                log.exception("rescanning the LoRA adapters in %s failed", self.settings.folder)

    # -- runtime updates -----------------------------------------------------------------------
    async def load(self, name: str, path: Path) -> Adapter:
        """Load the adapter at ``path`` under ``name`` (a runtime update); AdapterError when it cannot,
        EngineLoadError when the engine did not answer."""
        if not path.is_absolute():
            raise AdapterError(f"{path} is not an absolute path on the server")
        if name in self.settings.base_names:
            raise AdapterConflictError(409, f"{name!r} is the base model's name; choose another")
        adapter = await asyncio.to_thread(read_adapter, path)
        adapter = dataclasses.replace(adapter, name=name)
        check_adapter(adapter, max_rank=self.settings.max_rank, base_names=self.settings.base_names)
        async with self._lock:
            if name in self._leaving:
                raise AdapterConflictError(409, f"adapter {name!r} is being unloaded; load it again after")
            if name in self.loaded:
                raise AdapterConflictError(
                    409, f"an adapter named {name!r} is loaded already; unload it first"
                )
            error = await self._engine_load(adapter)
            if error is not None:
                raise AdapterError(error)
            self.skipped.pop(name, None)
            self._loaded(adapter, "runtime")
        return adapter

    async def unload(self, name: str) -> bool:
        """Unload adapter ``name`` (a runtime update), once its requests in flight have finished: True
        when it is unloaded now, False when it still has requests in flight (it goes after them)."""
        async with self._lock:
            item = self.loaded.get(name)
            if item is None or name in self._leaving:
                raise AdapterConflictError(404, f"no LoRA adapter named {name!r} is loaded")
            if item.origin == "folder" and self.settings.refresh_interval is not None:
                raise AdapterConflictError(
                    409,
                    f"adapter {name!r} comes from {self.settings.folder}, which is rescanned: the next scan "
                    "would load it again; remove its folder instead",
                )
            removal = self._start_removal(name, "unloaded at run time")
        if self._in_use.get(name, 0):
            return False  # new requests get 404 from now on; the engine unloads it after the last
        # Shielded: a caller that goes away does not stop the removal half-way.
        await asyncio.shield(removal)
        return True

    async def aclose(self) -> None:
        for task in list(self._removals):
            task.cancel()

    # -- the engine ------------------------------------------------------------------------
    async def _engine_load(self, adapter: Adapter) -> str | None:
        """Load into the engine; None when it did, else the engine's reason. EngineLoadError when
        the engine did not answer (the adapter may be fine: a later scan or call tries again)."""
        payload = {"lora_name": adapter.name, "lora_path": str(adapter.path)}
        try:
            status, body = await self.proxy.call_json(
                "POST", "/v1/load_lora_adapter", payload, timeout=ENGINE_LOAD_TIMEOUT_S
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineLoadError(f"the engine did not answer the load ({type(exc).__name__})") from None
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if status == 200 or (isinstance(message, str) and _ALREADY_LOADED in message):
            return None
        return f"the engine refused it: {message or f'HTTP {status}'}"

    async def _engine_unload(self, name: str) -> None:
        try:
            status, _ = await self.proxy.call_json("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = f"no answer ({type(exc).__name__})"
        if status not in (200, 404):  # 404: the engine has no such adapter, which is the goal
            log.warning("unloading LoRA adapter %s: the engine answered %s", name, status)
        self.loaded.pop(name, None)
        self._leaving.pop(name, None)
        log.info("LoRA adapter %s unloaded", name)

    # -- bookkeeping ----------------------------------------------------------------------------
    def _loaded(self, adapter: Adapter, origin: Origin) -> None:
        self.loaded[adapter.name] = LoadedAdapter(adapter, origin)
        self._skip_signature.pop(adapter.name, None)
        log.info(
            "LoRA adapter %s loaded (rank %d, %s; from %s)",
            adapter.name,
            adapter.rank,
            ", ".join(adapter.target_modules),
            adapter.path,
        )

    def _skip(self, item: SkippedAdapter, signature: tuple[float, ...] | None) -> None:
        """``signature`` None: try it again at the next scan even when nothing changed."""
        self.skipped[item.name] = item
        if signature is None:
            self._skip_signature.pop(item.name, None)
        else:
            self._skip_signature[item.name] = signature
        log.warning("LoRA adapter %s skipped: %s (%s)", item.name, item.reason, item.path)

    def _mark_leaving(self, name: str) -> asyncio.Event:
        idle = asyncio.Event()
        self._leaving[name] = idle
        if self._in_use[name] <= 0:
            idle.set()
        return idle

    def _start_removal(self, name: str, why: str) -> asyncio.Task[None]:
        """Stop new requests on ``name`` now; unload it once the ones in flight have finished."""
        idle = self._mark_leaving(name)
        waiting = self._in_use.get(name, 0)
        log.info(
            "LoRA adapter %s: %s; unloading%s", name, why, f" after {waiting} request(s)" if waiting else ""
        )

        async def remove() -> None:
            await idle.wait()
            async with self._lock:
                await self._engine_unload(name)

        task = asyncio.create_task(remove(), name=f"unload-{name}")
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)
        return task
