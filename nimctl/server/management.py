"""NIM's management endpoints, answered by the front itself from the first second."""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from nimctl import API_VERSION, __version__
from nimctl.engine_flags import masked
from nimctl.server.http_errors import MANAGEMENT_ERRORS, error_body, error_responses, openai_error
from nimctl.server.metrics import CONTENT_TYPE, FrontMetrics
from nimctl.server.proxy import EngineProxy
from nimctl.server.state import ServerState
from nimctl.server.token_rates import engine_metrics_path

if TYPE_CHECKING:
    from nimctl.profiles.schema import License

_LICENSE_PREFIXES = ("license", "licence")


def find_license_file(folder: Path | None) -> Path | None:
    if folder is None or not folder.is_dir():
        return None
    candidates = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().startswith(_LICENSE_PREFIXES)
    )
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class _ModelFiles:
    """What the management endpoints report about a model folder."""

    license_file: dict[str, Any] | None  # /v1/license's body, url excluded
    assets: list[str]


def _read_model_files(folder: Path) -> _ModelFiles:
    path = find_license_file(folder)
    license_file = None
    if path is not None:
        data = path.read_bytes()
        license_file = {
            "name": path.name,
            "path": str(path),
            "sha": hashlib.sha1(data).hexdigest(),
            "size": len(data),
            "type": "file",
            "content": data.decode(errors="replace"),
        }
    assets = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return _ModelFiles(license_file, assets)


# A fetched model folder does not change while the server runs: read it once.
_read_fetched_model_files = functools.lru_cache(maxsize=4)(_read_model_files)


def _model_files(state: ServerState) -> _ModelFiles:
    if state.model_dir is not None:
        return _read_fetched_model_files(state.model_dir)
    folder = state.plan.source.local_dir(state.plan.config.cache_path)
    if folder is None or not folder.is_dir():
        return _ModelFiles(None, [state.plan.source.uri])
    return _read_model_files(folder)  # not fetched yet: it may still change


def _manifest_license(state: ServerState) -> License | None:
    return state.plan.manifest.model.license if state.plan.manifest else None


def _license(state: ServerState) -> dict[str, Any] | None:
    """/v1/license's body: the model folder's LICENSE* file, with the manifest's URL for it."""
    license_file = _model_files(state).license_file
    if license_file is None:
        return None
    return {**license_file, "url": getattr(_manifest_license(state), "url", None)}


def _license_info(state: ServerState) -> dict[str, Any] | None:
    """/v1/metadata's licenseInfo: the file's details, else the license the manifest names."""
    info = _license(state)
    if info is not None:
        info.pop("content")
        return info
    named = _manifest_license(state)
    if named is None:
        return None
    # No file to measure: the fields that describe one are null, and `type` says where this came from.
    return {"name": named.name, "path": None, "sha": None, "size": None, "url": named.url, "type": "manifest"}


def _no_license_message(state: ServerState) -> str:
    folder = state.model_dir or state.plan.source.local_dir(state.plan.config.cache_path)
    where = f"in {folder}" if folder is not None else "(the model files are not fetched yet)"
    message = f"no license file (LICENSE*) {where} for model {state.plan.source.uri}"
    named = _manifest_license(state)
    if named is not None:
        at = f" at {named.url}" if named.url else ""
        message += f"; its manifest names the license {named.name}{at}, but its text is not available here"
    return message


# /v1/metrics: the engine's answer within this many seconds in all; a ``name[]`` filter of more
# names, or longer ones, than any scraper sends is not passed on (the whole document is served).
METRICS_TIMEOUT_S = 3.0
MAX_METRIC_NAMES = 256
MAX_METRIC_NAME_CHARS = 200


def build_router(state: ServerState, metrics: FrontMetrics, proxy: EngineProxy) -> APIRouter:
    router = APIRouter(tags=["management"])

    def health(status: str, message: str) -> dict[str, str]:
        return {"object": "health.response", "message": message, "status": status}

    @router.get("/v1/health/live", summary="200 while the server process runs")
    async def live() -> dict[str, str]:
        return health("live", "service is live")

    @router.get(
        "/v1/health/ready",
        responses=error_responses(503),
        summary="200 once the model answers; 503 while loading or unhealthy",
    )
    async def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse(health("ready", state.message))
        body: dict[str, Any] = {**error_body(503, state.message), **health(state.phase.value, state.message)}
        if (progress := state.progress) is not None:  # while downloading: the numbers behind the message
            body["progress"] = progress.to_dict()
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @router.get(
        "/v1/version", responses=error_responses(*MANAGEMENT_ERRORS), summary="nimctl release and API version"
    )
    async def version() -> dict[str, str]:
        return {"release": __version__, "api": API_VERSION}

    @router.get(
        "/v1/license",
        responses=error_responses(404, *MANAGEMENT_ERRORS),
        summary="The model's license, with its full text",
    )
    async def license_() -> JSONResponse:
        info = _license(state)
        if info is None:
            return openai_error(404, _no_license_message(state))
        return JSONResponse(info)

    @router.get(
        "/v1/metadata",
        responses=error_responses(*MANAGEMENT_ERRORS),
        summary="Model, assets, license and selected profile",
    )
    async def metadata() -> dict[str, Any]:
        plan = state.plan
        return {
            "version": __version__,
            "modelInfo": [
                {
                    "shortName": plan.served_name,
                    "modelUrl": plan.source.uri,
                    "maxModelLen": state.max_model_len,
                }
            ],
            "assetInfo": _model_files(state).assets,
            "licenseInfo": _license_info(state),
            "profile_id": plan.profile_id,
            "profile_name": plan.profile_name,
            "selectedModelProfileId": plan.profile_id,
            "repository_override": plan.config.repository_override,
            # What the engine was started with (benchmark records keep it); credentials masked.
            "engineArgs": masked(plan.engine_args),
            # null when LoRA is off; else the settings and each adapter, loaded or skipped with why
            "loraAdapters": state.adapters.to_dict() if state.adapters is not None else None,
        }

    @router.get(
        "/v1/manifest",
        responses=error_responses(*MANAGEMENT_ERRORS),
        summary="The model manifest and its profiles",
    )
    async def manifest() -> dict[str, Any]:
        found = state.plan.manifest
        return {
            "manifest_file": found.text if found else None,
            "repository_override": state.plan.config.repository_override,
            "profiles": [profile.to_public_dict() for profile in found.profiles] if found else [],
            "lora_adapters": sorted(state.adapters.loaded) if state.adapters is not None else [],
        }

    # Prometheus text, not JSON: documented as such.
    @router.get(
        "/v1/metrics",
        response_class=PlainTextResponse,
        summary="Prometheus metrics: the engine's and the front's",
    )
    async def metrics_(request: Request) -> Response:
        names = request.query_params.getlist("name[]")
        sane = names and len(names) <= MAX_METRIC_NAMES and max(map(len, names)) <= MAX_METRIC_NAME_CHARS
        filtered = frozenset(names) if sane else None
        engine_text = None
        if state.engine is not None and state.engine.returncode is None:
            # None while the engine loads or after it died: the front's own metrics still say so.
            # `?name[]=...` (prometheus_client's filter) narrows the engine's part, ~60 KB whole,
            # to the samples asked for (ps asks a few instances at once); render() the front's own.
            started = time.monotonic()
            if filtered:
                path = engine_metrics_path(sorted(filtered))
                engine_text = await proxy.get_text(path, timeout=METRICS_TIMEOUT_S)
            if engine_text is None:  # no filter, an odd one (served whole), or an engine without /metrics/
                left = METRICS_TIMEOUT_S - (time.monotonic() - started)
                engine_text = await proxy.get_text("/metrics", timeout=max(0.5, left))
        return Response(metrics.render(engine_text, filtered), media_type=CONTENT_TYPE)

    return router
