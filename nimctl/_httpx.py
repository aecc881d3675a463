"""httpx, imported without its command-line tool.

httpx's ``__init__`` imports its own CLI (click, rich.progress, pygments: ~90 ms, a third
of a ``nimctl health`` run) whenever those happen to be installed. A None entry in
sys.modules makes that optional import fail fast, httpx falls back to its stub ``main``,
and the entry is removed again. nimctl never runs the httpx CLI. Every nimctl module that
talks HTTP (the client, and the runtime's readiness probes and Docker socket lookup) imports
httpx from here.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        if sys.modules.get("httpx._main", ...) is None:
            del sys.modules["httpx._main"]
import httpx  # binds the name when httpx was imported before this module

__all__ = ["httpx"]
