"""What a bench run sends: the concurrency levels, how long each lasts, and the shape of every request.

Every request is a text completion (``/v1/completions``) of a prompt of exactly ``input_tokens``
tokens (see :mod:`.prompts`), held to exactly ``output_tokens`` generated tokens: ``max_tokens`` caps
it, ``min_tokens`` and ``ignore_eos`` keep the model from stopping early, as AIPerf and
``vllm bench serve`` do. Without them a random-weight or chatty model would answer with any length
and the tokens/s of two runs could not be compared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from nimctl.errors import UsageError

COMPLETIONS_PATH = "/v1/completions"


@dataclass(frozen=True)
class Workload:
    """One sweep's workload; exactly one of ``requests`` (per level) and ``duration_s`` (per level) is set."""

    concurrency: tuple[int, ...]
    input_tokens: int
    output_tokens: int
    requests: int | None = None
    duration_s: float | None = None
    stream: bool = True
    warmup: int = 0
    # None: a fresh seed per run (recorded in the result). A fixed one sends the same prompts again,
    # which a server's prefix cache remembers from the last run: the second run would look faster.
    seed: int | None = None
    # The longest silence allowed from the server during one request (a hung server ends as "timeout").
    request_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.concurrency:
            raise UsageError("no concurrency level given", hint="pass --concurrency 1,4,16")
        for level in self.concurrency:
            if not isinstance(level, int) or isinstance(level, bool) or level < 1:
                raise UsageError(
                    f"invalid concurrency {level!r}: each level is a number of requests in flight, 1 or more",
                    hint="pass --concurrency 1,4,16",
                )
        if len(set(self.concurrency)) != len(self.concurrency):
            raise UsageError("a concurrency level is given twice", hint="list each level once")
        if (self.requests is None) == (self.duration_s is None):
            raise UsageError(
                "give either a number of requests per level or a duration per level, not "
                + ("both" if self.requests is not None else "neither"),
                hint="pass --requests N or --duration SECONDS",
            )
        if self.requests is not None and self.requests < 1:
            raise UsageError(f"invalid --requests {self.requests}: 1 or more", hint="pass --requests 64")
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise UsageError(
                f"invalid --duration {self.duration_s}: above 0 seconds", hint="pass --duration 30"
            )
        _at_least(self.input_tokens, 1, "--input-tokens", "pass --input-tokens 128")
        _at_least(self.output_tokens, 1, "--output-tokens", "pass --output-tokens 128")
        _at_least(self.warmup, 0, "--warmup", "pass --warmup 4, or 0 for none")
        if not self.request_timeout_s > 0:
            raise UsageError(f"invalid request timeout {self.request_timeout_s}", hint="give seconds above 0")

    @property
    def max_concurrency(self) -> int:
        return max(self.concurrency)

    def prompts_needed(self) -> int | None:
        """Distinct prompts for the whole sweep (warm-up included), or None when levels run for a duration."""
        if self.requests is None:
            return None
        return self.warmup + self.requests * len(self.concurrency)

    def request_body(self, model: str, prompt: str) -> dict[str, Any]:
        """The ``/v1/completions`` body for one prompt."""
        body: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "max_tokens": self.output_tokens,
            "min_tokens": self.output_tokens,
            "ignore_eos": True,
            "stream": self.stream,
        }
        if self.stream:
            # The last chunk then carries usage: the server's own count of the tokens, checked per request.
            body["stream_options"] = {"include_usage": True}
        return body

    def to_dict(self) -> dict[str, Any]:
        """Stable keys, for JSON output and the history."""
        data = asdict(self)
        data["concurrency"] = list(self.concurrency)
        return data


def _at_least(value: object, minimum: int, flag: str, hint: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"invalid {flag} {value!r}: a whole number, {minimum} or more", hint=hint)


def parse_concurrency(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``, in the order given (a sweep may go down as well as up)."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise UsageError(f"invalid --concurrency {text!r}: an empty level", hint="pass --concurrency 1,4,16")
    levels: list[int] = []
    for part in parts:
        try:
            level = int(part)
        except ValueError:
            raise UsageError(
                f"invalid --concurrency {text!r}: {part!r} is not a whole number",
                hint="pass --concurrency 1,4,16",
            ) from None
        if level < 1:
            raise UsageError(
                f"invalid --concurrency {text!r}: {level} requests in flight; each level needs 1 or more",
                hint="pass --concurrency 1,4,16",
            )
        if level in levels:
            raise UsageError(
                f"invalid --concurrency {text!r}: {level} is given twice", hint="list each level once"
            )
        levels.append(level)
    return tuple(levels)
