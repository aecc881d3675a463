"""A chat conversation: the message history, pending images, and the figures of each reply.

No I/O of its own: the CLI reads the user's lines and prints what :meth:`Conversation.stream`
yields. A reply that does not finish (Ctrl-C, a dropped connection) leaves the history as
it was before the question, so the next question is not asked after a half answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nimctl.client.images import DEFAULT_MAX_IMAGE_BYTES, image_to_url, user_message

if TYPE_CHECKING:
    from nimctl.client.http import NimClient
    from nimctl.client.structured import CheckResult, Constraint
    from nimctl.client.types import ChatCompletion, Usage


@dataclass
class ReplyStats:
    """Figures for one reply. ``ttft_s`` is None for a reply that was not streamed."""

    total_s: float
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Generation speed: completion tokens over the time spent generating them."""
        if not self.completion_tokens:
            return None
        generating = self.total_s - (self.ttft_s or 0.0)
        if generating <= 0:
            generating = self.total_s
        return self.completion_tokens / generating if generating > 0 else None

    def as_dict(self) -> dict[str, Any]:
        rate = self.tokens_per_s
        return {
            "time_to_first_token_s": None if self.ttft_s is None else round(self.ttft_s, 4),
            "total_s": round(self.total_s, 4),
            "tokens_per_s": None if rate is None else round(rate, 2),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    def summary(self) -> str:
        parts = []
        if self.ttft_s is not None:
            parts.append(f"time to first token {self.ttft_s:.3f} s")
        rate = self.tokens_per_s
        if rate is not None:
            parts.append(f"{rate:.1f} tokens/s")
        parts.append(f"prompt {_count(self.prompt_tokens)} tokens")
        parts.append(f"completion {_count(self.completion_tokens)} tokens")
        parts.append(f"total {self.total_s:.3f} s")
        return ", ".join(parts)


@dataclass
class Conversation:
    client: NimClient
    model: str
    system: str | None = None
    # Sampling and length settings sent with every request (max_tokens, temperature, seed...).
    params: dict[str, Any] = field(default_factory=dict)
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    # The structured-output constraint each reply must keep (--json-schema, --regex...); its request
    # fields are added to ``params`` here, once.
    constraint: Constraint | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    pending_images: list[str] = field(default_factory=list)
    last_stats: ReplyStats | None = None
    # Why the last reply ended ("stop", "length"...): a reply cut at max_tokens cannot keep a constraint.
    last_finish_reason: str | None = None
    last_text: str | None = None  # the whole last reply, streamed or not

    def __post_init__(self) -> None:
        if self.constraint is not None:
            self.params = self.constraint.merged_into(self.params)

    def check_last_reply(self) -> CheckResult | None:
        """Check the last reply against the constraint (None: no constraint); raises ReplyMismatchError."""
        if self.constraint is None:
            return None
        return self.constraint.verify(self.last_text or "", self.last_finish_reason)

    def attach_image(self, ref: str) -> None:
        """Validate and queue an image for the next question (raises UsageError when it is bad)."""
        self.pending_images.append(image_to_url(ref, max_bytes=self.max_image_bytes))

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def clear(self) -> None:
        """Forget the exchanged messages and pending images; the system prompt stays."""
        self.history.clear()
        self.pending_images.clear()

    def _messages_with(self, text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        question = user_message(text, list(self.pending_images))
        prefix = [{"role": "system", "content": self.system}] if self.system else []
        return [*prefix, *self.history, question], question

    def _remember(self, question: dict[str, Any], answer: str) -> None:
        self.history.extend([question, {"role": "assistant", "content": answer}])
        self.last_text = answer
        self.pending_images.clear()

    def ask(self, text: str) -> ChatCompletion:
        """One whole reply (not streamed)."""
        messages, question = self._messages_with(text)
        start = time.perf_counter()
        completion = self.client.chat(messages, model=self.model, **self.params)
        self.last_stats = _stats(time.perf_counter() - start, None, completion.usage)
        self.last_finish_reason = completion.choices[0].finish_reason if completion.choices else None
        self._remember(question, completion.text)
        return completion

    def stream(self, text: str) -> Iterator[str]:
        """Yield the reply's text as it arrives. Close the iterator to cancel (the request is closed)."""
        messages, question = self._messages_with(text)
        start = time.perf_counter()
        first_token_at: float | None = None
        usage: Usage | None = None
        pieces: list[str] = []
        finish_reason: str | None = None
        with self.client.chat_stream(messages, model=self.model, **self.params) as chunks:
            for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    finish_reason = choice.finish_reason or finish_reason
                piece = chunk.text
                if not piece:
                    continue
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                pieces.append(piece)
                yield piece
        end = time.perf_counter()
        ttft = (first_token_at if first_token_at is not None else end) - start
        self.last_stats = _stats(end - start, ttft, usage)
        self.last_finish_reason = finish_reason
        self._remember(question, "".join(pieces))


def _stats(total_s: float, ttft_s: float | None, usage: Usage | None) -> ReplyStats:
    return ReplyStats(
        total_s=total_s,
        ttft_s=ttft_s,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
    )


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)
