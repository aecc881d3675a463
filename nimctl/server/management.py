"""NIM's management endpoints, answered by the front itself from the first second."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from nimctl import API_VERSION, __version__
from nimctl.server.http_errors import error_body, openai_error
from nimctl.server.metrics import CONTENT_TYPE, FrontMetrics
from nimctl.server.proxy import EngineProxy
from nimctl.server.state import ServerState

_LICENSE_PREFIXES = ("license", "licence")


def find_license_file(folder: Path | None) -> Path | None:
    if folder is None or not folder.is_dir():
        return None
    candidates = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().startswith(_LICENSE_PREFIXES)
    )
    return candidates[0] if candidates else None


def _model_folder(state: ServerState) -> Path | None:
    return state.model_dir or state.plan.source.local_dir(state.plan.config.cache_path)


def _license(state: ServerState) -> dict[str, Any] | None:
    path = find_license_file(_model_folder(state))
    if path is None:
        return None
    data = path.read_bytes()
    manifest_license = state.plan.manifest.model.license if state.plan.manifest else None
    return {
        "name": path.name,
        "path": str(path),
        "sha": hashlib.sha1(data).hexdigest(),
        "size": len(data),
        "url": getattr(manifest_license, "url", None),
        "type": "file",
        "content": data.decode(errors="replace"),
    }


def _assets(state: ServerState) -> list[str]:
    folder = _model_folder(state)
    if folder is None or not folder.is_dir():
        return [state.plan.source.uri]
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def build_router(state: ServerState, metrics: FrontMetrics, proxy: EngineProxy) -> APIRouter:
    router = APIRouter(tags=["management"])

    def health(status: str, message: str) -> dict[str, str]:
        return {"object": "health.response", "message": message, "status": status}

    @router.get("/v1/health/live", summary="200 while the server process runs")
    async def live() -> dict[str, str]:
        return health("live", "service is live")

    @router.get("/v1/health/ready", summary="200 once the model answers; 503 while loading or unhealthy")
    async def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse(health("ready", state.message))
        body = {**error_body(503, state.message), **health(state.phase.value, state.message)}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @router.get("/v1/version", summary="nimctl release and API version")
    async def version() -> dict[str, str]:
        return {"release": __version__, "api": API_VERSION}

    @router.get("/v1/license", summary="The model's license, with its full text")
    async def license_() -> JSONResponse:
        info = _license(state)
        if info is None:
            return openai_error(404, f"no license file (LICENSE*) found for model {state.plan.source.uri}")
        return JSONResponse(info)

    @router.get("/v1/metadata", summary="Model, assets, license and selected profile")
    async def metadata() -> dict[str, Any]:
        license_info = _license(state)
        if license_info:
            license_info.pop("content")
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
            "assetInfo": _assets(state),
            "licenseInfo": license_info,
            "profile_id": plan.profile_id,
            "profile_name": plan.profile_name,
            "selectedModelProfileId": plan.profile_id,
            "repository_override": plan.config.repository_override,
        }

    @router.get("/v1/manifest", summary="The model manifest and its profiles")
    async def manifest() -> dict[str, Any]:
        found = state.plan.manifest
        return {
            "manifest_file": found.text if found else None,
            "repository_override": state.plan.config.repository_override,
            "profiles": [profile.to_public_dict() for profile in found.profiles] if found else [],
        }

    @router.get("/v1/metrics", summary="Prometheus metrics: the engine's and the front's")
    async def metrics_() -> Response:
        engine_text = None
        if state.engine is not None and state.engine.returncode is None:
            try:
                status, content = await proxy.get("/metrics", timeout=3)
                if status == 200:
                    engine_text = content.decode()
            except (aiohttp.ClientError, TimeoutError):
                pass  # the engine is loading or gone: the front's own metrics still say so
        return Response(metrics.render(engine_text), media_type=CONTENT_TYPE)

    return router
