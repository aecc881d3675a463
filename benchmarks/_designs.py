"""The data-path designs benchmarks/front_overhead.py compares, each as a running deployment.

A design is a way of putting NIM's front between clients and the vLLM engine. Each design
module (``design_*.py`` here) has ``start(model, key, workdir) -> Deployment``; the benchmark
sends the same requests, in alternating rounds, to ``deployment.url`` (through the design) and
to ``deployment.direct_url`` (the bare engine the design fronts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Deployment:
    name: str
    url: str  # where clients send requests through the design
    direct_url: str  # the bare engine behind it: the "direct" path
    key: str | None  # the API key the design wants (None: open)
    # Processes whose CPU is the front's cost. Read over both paths' rounds: on the direct rows
    # it is their idle background (or, for a design inside the engine's process, the engine's
    # own work, so the front's cost is the difference: see ``cpu_shared_with_engine``).
    front_pids: list[int]
    stop: Callable[[], None]
    # Extra headers of the direct path (a design inside the engine skips itself on a marker).
    direct_headers: dict[str, str] = field(default_factory=dict)
    cpu_shared_with_engine: bool = False
    # What the design does not do of the front's behaviours (shown beside its figures).
    gaps: list[str] = field(default_factory=list)

    def headers(self, path: str) -> dict[str, str]:
        if path == "direct":
            return dict(self.direct_headers)
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}
