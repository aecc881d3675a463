"""Service-level objectives: ``--slo ttft=200ms,itl=50ms,e2e=2s``, and whether one request met them.

Goodput (in :mod:`.stats`) counts the requests per second that met every objective given, as
AIPerf's ``--goodput`` does. Times take ``ms`` or ``s``; a bare number is milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nimctl.errors import UsageError

_KEYS = {"ttft": "ttft_ms", "itl": "itl_ms", "e2e": "e2e_ms"}
_HINT = "pass --slo ttft=200ms,itl=50ms,e2e=2s (any of the three; ms or s)"


@dataclass(frozen=True)
class Slo:
    """Upper bounds in milliseconds; None: not an objective."""

    ttft_ms: float | None = None
    itl_ms: float | None = None
    e2e_ms: float | None = None

    def met(self, ttft_s: float | None, itl_s: float | None, e2e_s: float) -> bool:
        """A request without a TTFT (not streamed) or an ITL (one token) cannot miss those objectives."""
        return _within(ttft_s, self.ttft_ms) and _within(itl_s, self.itl_ms) and _within(e2e_s, self.e2e_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"ttft_ms": self.ttft_ms, "itl_ms": self.itl_ms, "e2e_ms": self.e2e_ms}


def _within(value_s: float | None, bound_ms: float | None) -> bool:
    return bound_ms is None or value_s is None or value_s * 1000.0 <= bound_ms


def parse_slo(text: str) -> Slo:
    """``"ttft=200ms,itl=50ms,e2e=2s"`` -> :class:`Slo`; anything else is a :class:`UsageError`."""
    if not text.strip():
        raise UsageError("empty --slo", hint=_HINT)
    bounds: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"invalid --slo {text!r}: {part.strip()!r} is not NAME=TIME", hint=_HINT)
        if key not in _KEYS:
            raise UsageError(
                f"invalid --slo {text!r}: unknown objective {key!r} (known: {', '.join(_KEYS)})", hint=_HINT
            )
        if _KEYS[key] in bounds:
            raise UsageError(f"invalid --slo {text!r}: {key} is given twice", hint=_HINT)
        bounds[_KEYS[key]] = _milliseconds(value.strip(), key, text)
    return Slo(**bounds)


def _milliseconds(value: str, key: str, text: str) -> float:
    number, scale = value, 1.0
    if value.lower().endswith("ms"):
        number = value[:-2]
    elif value.lower().endswith("s"):
        number, scale = value[:-1], 1000.0
    try:
        parsed = float(number.strip())
    except ValueError:
        raise UsageError(
            f"invalid --slo {text!r}: {key}={value!r} is not a time like 200ms or 2s", hint=_HINT
        ) from None
    if not (parsed > 0 and math.isfinite(parsed)):
        raise UsageError(f"invalid --slo {text!r}: {key} must be above 0", hint=_HINT)
    return parsed * scale
