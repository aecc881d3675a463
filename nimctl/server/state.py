"""What the front knows about itself and its engine; shared by the routes and the supervisor."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nimctl.server.engine import EngineProcess
    from nimctl.server.plan import LaunchPlan


class Phase(StrEnum):
    starting = "starting"
    fetching = "fetching"  # model files: download, cache, or built-in generation
    loading = "loading"  # engine process started, not answering yet
    ready = "ready"
    unhealthy = "unhealthy"  # was ready, engine stopped answering its health check
    failed = "failed"  # engine exited or could not start: the front is exiting
    stopping = "stopping"


PHASE_MESSAGES = {
    Phase.starting: "server is starting",
    Phase.fetching: "model files are being fetched",
    Phase.loading: "model is loading in the engine",
    Phase.ready: "service is ready",
    Phase.unhealthy: "engine is not answering its health check",
    Phase.failed: "engine failed",
    Phase.stopping: "server is shutting down",
}


@dataclass
class ServerState:
    plan: LaunchPlan
    phase: Phase = Phase.starting
    detail: str | None = None
    draining: bool = False
    model_dir: Path | None = None
    engine: EngineProcess | None = None
    engine_models: list[dict[str, Any]] = field(default_factory=list)
    engine_starts: int = 0
    exit_code: int = 0
    engine_port: int | None = None  # the plan's fixed port, else chosen just before the launch

    def __post_init__(self) -> None:
        if self.engine_port is None:
            self.engine_port = self.plan.engine_port

    @property
    def engine_url(self) -> str | None:
        return f"http://127.0.0.1:{self.engine_port}" if self.engine_port else None

    @property
    def ready(self) -> bool:
        return self.phase is Phase.ready and not self.draining

    @property
    def message(self) -> str:
        base = PHASE_MESSAGES[Phase.stopping if self.draining else self.phase]
        return f"{base}: {self.detail}" if self.detail else base

    @property
    def max_model_len(self) -> int | None:
        for model in self.engine_models:
            if isinstance(model.get("max_model_len"), int):
                return int(model["max_model_len"])
        return self.plan.config.max_model_len or (
            self.plan.manifest.model.max_context if self.plan.manifest else None
        )

    def set_phase(self, phase: Phase, detail: str | None = None) -> None:
        self.phase = phase
        self.detail = detail
