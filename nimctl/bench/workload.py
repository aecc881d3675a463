"""What a bench run sends: the concurrency levels, how long each lasts, and the shape of every request.

Every request is a text completion (``/v1/completions``) of a prompt: one of exactly ``input_tokens``
tokens (see :mod:`.prompts`), or a line of a ``dataset`` file (see :mod:`.dataset`). With ``images``
K above 0 it is a chat completion (``/v1/chat/completions``) instead, whose one user message holds
the prompt and K generated PNGs of ``image_size`` (see :mod:`.images`).

Generation is held to exactly ``output_tokens`` (or a dataset line's own count): ``max_tokens`` caps
it, ``min_tokens`` and ``ignore_eos`` keep the model from stopping early, as AIPerf and
``vllm bench serve`` do. Without them a random-weight or chatty model would answer with any length
and the tokens/s of two runs could not be compared.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nimctl.bench.images import MAX_SIDE
from nimctl.errors import UsageError

COMPLETIONS_PATH = "/v1/completions"
CHAT_COMPLETIONS_PATH = "/v1/chat/completions"


_URL = b'"url": "'
_EMPTY_URL = _URL + b'"'


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A request's body already encoded (the generator sends it as is); ``stream`` as in the body."""

    content: bytes
    stream: bool


@dataclass(frozen=True)
class Workload:
    """One sweep's workload; exactly one of ``requests`` (per level) and ``duration_s`` (per level) is set."""

    concurrency: tuple[int, ...]
    input_tokens: int | None  # None: the prompts come from ``dataset``
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
    dataset: Path | None = None  # a JSON Lines file of prompts (see .dataset), instead of input_tokens
    images: int = 0  # generated images per request; above 0, requests are chat completions
    image_size: tuple[int, int] = (512, 512)  # width, height

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
        if self.dataset is not None and self.input_tokens is not None:
            raise UsageError(
                "--input-tokens and --dataset both say what to send: give one",
                hint="drop --input-tokens to send the dataset's prompts",
            )
        if self.dataset is None:
            if self.input_tokens is None:
                raise UsageError(
                    "no prompt size given",
                    hint="pass --input-tokens 128, or --dataset FILE.jsonl for real prompts",
                )
            _at_least(self.input_tokens, 1, "--input-tokens", "pass --input-tokens 128")
        _at_least(self.images, 0, "--images", "pass --images 1, or 0 for none")
        check_image_size(self.image_size)
        _at_least(self.output_tokens, 1, "--output-tokens", "pass --output-tokens 128")
        _at_least(self.warmup, 0, "--warmup", "pass --warmup 4, or 0 for none")
        if not self.request_timeout_s > 0:
            raise UsageError(f"invalid request timeout {self.request_timeout_s}", hint="give seconds above 0")

    def describe(self) -> str:
        """One line: the levels, how long each lasts, what each request sends."""
        levels = ",".join(str(level) for level in self.concurrency)
        per_level = f"{self.requests} requests" if self.requests else f"{self.duration_s:g} s"
        source = f"{self.input_tokens} tokens in" if self.input_tokens else f"prompts of {self.dataset}"
        width, height = self.image_size
        images = f", {self.images} image(s) of {width}x{height}" if self.images else ""
        return f"concurrency {levels}, {per_level} per level, {source}, {self.output_tokens} out{images}"

    @property
    def max_concurrency(self) -> int:
        return max(self.concurrency)

    def prompts_needed(self) -> int | None:
        """Distinct prompts for the whole sweep (warm-up included), or None when levels run for a duration."""
        if self.requests is None:
            return None
        return self.warmup + self.requests * len(self.concurrency)

    @property
    def path(self) -> str:
        """Where every request goes: chat completions when images are sent, else completions."""
        return CHAT_COMPLETIONS_PATH if self.images else COMPLETIONS_PATH

    @property
    def exact_input_tokens(self) -> int | None:
        """The prompt tokens the server's usage must report per request; None when not known in advance
        (a dataset's prompts; with images, the chat template's and the images' tokens count too)."""
        return self.input_tokens if self.dataset is None and not self.images else None

    def request_body(
        self, model: str, prompt: str, *, images: Sequence[str] = (), output_tokens: int | None = None
    ) -> dict[str, Any]:
        """The body for one prompt: a completion, or with ``images`` (data URLs) a chat completion whose
        user message holds the prompt and then the images. ``output_tokens`` overrides the workload's."""
        tokens = self.output_tokens if output_tokens is None else output_tokens
        body: dict[str, Any] = {"model": model}
        if self.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
            parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
            body["messages"] = [{"role": "user", "content": parts}]
        else:
            body["prompt"] = prompt
        body.update(max_tokens=tokens, min_tokens=tokens, ignore_eos=True, stream=self.stream)
        if self.stream:
            # The last chunk then carries usage: the server's own count of the tokens, checked per request.
            body["stream_options"] = {"include_usage": True}
        return body

    def encoded_body(
        self, model: str, prompt: str, *, images: Sequence[bytes] = (), output_tokens: int | None = None
    ) -> EncodedBody:
        """:meth:`request_body` as the bytes sent, made without running ``json.dumps`` over the images:
        for a 512x512 PNG that took 2 ms of the generator's loop per request, more than building it."""
        body = self.request_body(model, prompt, images=[""] * len(images), output_tokens=output_tokens)
        # Every other string is escaped (each quote in it preceded by a backslash), so this
        # sequence is found exactly where the empty URLs were put.
        parts = json.dumps(body).encode().split(_EMPTY_URL)
        if len(parts) != len(images) + 1:  # pragma: no cover - json.dumps's own format changed
            raise AssertionError("the empty image URLs were not found in the body")
        content = parts[0] + b"".join(
            _URL + url + b'"' + part for url, part in zip(images, parts[1:], strict=True)
        )
        return EncodedBody(content, self.stream)

    def to_dict(self) -> dict[str, Any]:
        """Stable keys, for JSON output and the history."""
        data = asdict(self)
        data["concurrency"] = list(self.concurrency)
        data["dataset"] = None if self.dataset is None else str(self.dataset)
        data["image_size"] = list(self.image_size)
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


_SIZE_HINT = "pass --image-size WIDTHxHEIGHT, e.g. --image-size 512x512"


def check_image_size(size: object) -> None:
    if (
        not isinstance(size, tuple)
        or len(size) != 2
        or not all(isinstance(side, int) and not isinstance(side, bool) for side in size)
    ):
        raise UsageError(f"invalid image size {size!r}: two whole numbers, width and height", hint=_SIZE_HINT)
    if not all(1 <= side <= MAX_SIDE for side in size):
        raise UsageError(
            f"invalid --image-size {size[0]}x{size[1]}: each side is 1 to {MAX_SIDE} pixels", hint=_SIZE_HINT
        )


def parse_image_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height); ``X`` and ``*`` are read as ``x`` too."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if match is None:
        raise UsageError(f"invalid --image-size {text!r}: not WIDTHxHEIGHT", hint=_SIZE_HINT)
    size = (int(match[1]), int(match[2]))
    check_image_size(size)
    return size
